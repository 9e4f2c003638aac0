"""What a peer run is given: our data exported to .npz and one job JSON with everything else.

The data is loaded by ``cql_runner.run.load_data`` from a composed ``cql-train`` config, so the
peer trains on exactly the transitions our run trains on (same reward transform, same action
rescaling). The evaluation env, its reset seeds, the step limit and the reference returns come
from our ``Evaluator``'s own rules, so the normalized scores of both sides are comparable.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from cql_runner.data.types import OfflineData
from cql_runner.evaluation import reference_scores, resolve_env_id
from cql_runner.rollout import env_seeds

PEER_SCRIPT = Path(__file__).with_name("d3rlpy_train.py")
# d3rlpy's own defaults are used for everything not listed here (recorded in each summary).
PEER_METHODS = {"cql": "d3rlpy-cql", "bc": "d3rlpy-bc"}


@dataclass(frozen=True)
class PeerBudget:
    """The budget both sides share: seeds, gradient steps, evaluation cadence, network, batch."""

    seeds: tuple[int, ...]
    steps: int
    eval_every: int
    eval_episodes: int
    hidden: tuple[int, ...] = (256, 256)
    batch_size: int = 256
    n_actions: int = 10
    threads: int = 1
    # Extra d3rlpy config fields (e.g. {"conservative_weight": 10.0}); empty means d3rlpy's defaults.
    algo_params: dict[str, Any] = field(default_factory=dict)


def episode_arrays(data: OfflineData) -> dict[str, np.ndarray]:
    """Our flat transitions as d3rlpy's episode layout: one row per step, episodes split by flags.

    d3rlpy cuts episodes where ``terminals`` or ``timeouts`` is set. An episode the data ends
    without either flag (collection stopped mid-episode) is marked as a timeout, so it is not
    glued to the next one. d3rlpy takes s′ from the next row, so the last step of a truncated
    episode (no next row) is not sampled there; our loader keeps it. That is d3rlpy's rule.
    """
    terminals = data.terminals.astype(np.float32).copy()
    timeouts = data.timeouts.astype(np.float32).copy()
    ends = np.append(data.episode_starts[1:], data.size) - 1
    open_end = (terminals[ends] == 0) & (timeouts[ends] == 0)
    timeouts[ends[open_end]] = 1.0
    return {
        "observations": data.observations.astype(np.float32),
        "actions": data.actions.astype(np.float32),
        "rewards": data.rewards.astype(np.float32),
        "terminals": terminals,
        "timeouts": timeouts,
    }


def export_npz(data: OfflineData, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **episode_arrays(data))  # type: ignore[arg-type]  # numpy's stub types **kwds like its flags
    tmp.replace(path)
    return path


def seed_dirs(run_dir: Path, seeds: Sequence[int]) -> list[Path]:
    """The same layout as ``cql-train``: the run dir itself for one seed, else seed<k>/."""
    return [run_dir] if len(seeds) == 1 else [run_dir / f"seed{s}" for s in seeds]


def make_job(
    cfg: DictConfig, data: OfflineData, algo: str, budget: PeerBudget, run_dir: Path, data_path: Path
) -> dict[str, Any]:
    """The job JSON for ``d3rlpy_train.py``: plain values only, nothing the peer has to re-derive."""
    if algo not in PEER_METHODS:
        raise ValueError(f"unknown peer algo {algo!r}; choose one of {', '.join(PEER_METHODS)}")
    ref_min, ref_max = reference_scores(data.meta, cfg.env)
    ev = cfg.eval
    dirs = seed_dirs(run_dir, budget.seeds)
    low = data.meta.action_low if data.meta.action_low is not None else -np.ones(data.act_dim)
    high = data.meta.action_high if data.meta.action_high is not None else np.ones(data.act_dim)
    method = PEER_METHODS[algo]
    return {
        "peer": {"method": method, "library": "d3rlpy", "version": "2.8.1", "algo_params": budget.algo_params},
        "algo": algo,
        "algo_params": budget.algo_params,
        "data": str(data_path),
        "dataset_id": data.meta.dataset_id,
        "seeds": list(budget.seeds),
        "seed_dirs": [str(d) for d in dirs],
        "steps": budget.steps,
        "eval_every": budget.eval_every,
        "hidden": list(budget.hidden),
        "batch_size": budget.batch_size,
        "n_actions": budget.n_actions,
        "threads": budget.threads,
        "eval_env_id": resolve_env_id(ev, data.meta),
        "max_episode_steps": None if ev.max_episode_steps is None else int(ev.max_episode_steps),
        "eval_env_seeds": {str(s): env_seeds([s], budget.eval_episodes, int(ev.seed_offset)) for s in budget.seeds},
        "action_low": [float(x) for x in low],
        "action_high": [float(x) for x in high],
        "ref_min_score": ref_min,
        "ref_max_score": ref_max,
        # What our reports group by (dotted keys after flattening): the env name and the method.
        "run_config": {
            "env": {"name": str(cfg.env.name)},
            "method": method,
            "dataset": {"id": data.meta.dataset_id},
            "train": {"steps": budget.steps, "batch_size": budget.batch_size},
            "network": {"hidden": list(budget.hidden)},
            "eval": {"every": budget.eval_every, "episodes": budget.eval_episodes},
            "peer": {"library": "d3rlpy", "version": "2.8.1", "algo": algo, "algo_params": budget.algo_params},
        },
    }


def write_job(job: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(job, indent=2) + "\n")
    return path


def peer_command(python: Path, job_path: Path) -> list[str]:
    """How our side starts the peer: the peer venv's python on the standalone script."""
    return [str(python), str(PEER_SCRIPT), str(job_path)]


def config_summary(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg.env)
