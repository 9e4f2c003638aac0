"""Where a dataset's reference scores come from, decided before any work starts.

The normalized score needs a random and an expert return. In order of precedence they are
the user's override (``ref_min_score=``/``ref_max_score=``), D4RL's published numbers for
the task families D4RL covers (so scores compare with the literature), or a measurement:
uniform random actions, or the expert SAC snapshot. The last needs a full SAC run, which a
``level=random`` dataset needs for nothing else: that case is announced up front, with the
estimated time and the override that skips it. Each choice is recorded in the metadata.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from cql_runner.reference_scores import d4rl_reference, d4rl_task


@dataclass(frozen=True)
class Reference:
    value: float | None  # None: measured later
    source: str  # "override", "D4RL (<task>)", "measured: ..."


def choose_references(cfg: Any) -> tuple[Reference, Reference]:
    """(min, max) references for ``cfg``: override, else D4RL's for its task, else to be measured."""
    task = d4rl_task(str(cfg.env))
    refs = []
    episodes = f"ref_episodes={cfg.ref_episodes}"
    for which, override, measured in (
        ("min", cfg.ref_min_score, f"measured: mean return of uniform random actions ({episodes})"),
        ("max", cfg.ref_max_score, f"measured: mean return of the deterministic expert SAC snapshot ({episodes})"),
    ):
        if override is not None:
            refs.append(Reference(float(override), "override"))
        elif task is not None:
            refs.append(Reference(d4rl_reference(task, which), f"D4RL ({task})"))
        else:
            refs.append(Reference(None, measured))
    return refs[0], refs[1]


def sac_seconds(obs_dim: int, act_dim: int, sac: Any, probe_updates: int = 20) -> float:
    """A lower bound on the wall time of ``sac.steps`` of online SAC here: timed gradient updates
    of the configured networks on random data (env steps and evaluations come on top)."""
    from .online_sac import make_sac_agent
    from .replay import ReplayBuffer

    batch = int(sac.batch_size)
    replay = ReplayBuffer(batch, obs_dim, act_dim)
    rng = np.random.default_rng(0)
    for _ in range(batch):
        replay.add(
            rng.normal(size=obs_dim), rng.uniform(-1, 1, act_dim), 0.0, rng.normal(size=obs_dim), False, False, 0
        )
    agent = make_sac_agent(obs_dim, act_dim, 0, sac)
    for _ in range(2):  # warm-up: first calls allocate
        agent.update(replay.sample(rng, batch))
    start = time.perf_counter()
    for _ in range(probe_updates):
        agent.update(replay.sample(rng, batch))
    per_update = (time.perf_counter() - start) / probe_updates
    return per_update * int(sac.steps) * int(sac.updates_per_step)


def format_duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"
