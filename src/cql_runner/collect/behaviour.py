"""The behaviour policies of one (env, seed, SAC config): trained once, then read from a cache.

The medium rule (D4RL's "about a third of expert", made concrete). The expert's return is
unknown until training ends, so one SAC run serves both levels:

1. Train SAC for the whole ``sac.steps`` budget, evaluating the deterministic policy every
   ``sac.eval_every`` steps (``sac.eval_episodes`` seeded episodes) and keeping an actor
   snapshot at every evaluation.
2. expert = the snapshot with the best eval return (the earliest on a tie).
3. Measure the reference returns on ``ref_episodes`` fresh seeded episodes: R_random (uniform
   actions) and R_expert (the expert snapshot, deterministic).
4. medium = the first snapshot whose eval return reaches
   R_random + medium_fraction · (R_expert − R_random).
5. medium-replay = every transition SAC collected before that snapshot's step.

Cache layout: ``<out_dir>/behaviour/<env>/seed<k>/sac-<hash>/`` where the hash covers
everything that changes the result (env, time limit, seed, SAC config, medium_fraction,
ref_episodes, threads). It holds ``expert.pt`` and ``medium.pt`` (actor weights),
``medium_replay.npz`` (the replay rows up to the medium step), ``summary.json`` (written
last; its presence marks a complete entry) and, while training, ``train/`` checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from gymnasium.spaces import Box
from omegaconf import OmegaConf

from cql_runner import strict_json
from cql_runner.data.cache import user_cache_dir
from cql_runner.envs import make_vector_env
from cql_runner.networks import Actor

from .online_sac import Snapshot, train_sac
from .policies import REF_OFFSET, actor_policy, build_actor, mean_return, numpy_generator, uniform_policy
from .replay import ReplayBuffer

log = logging.getLogger(__name__)
CACHE_FORMAT = 1


@dataclass
class Behaviour:
    """A complete cache entry, loaded."""

    dir: Path
    summary: dict[str, Any]
    expert: dict[str, Any]
    medium: dict[str, Any]

    def actor(self, which: str) -> Actor:
        s = self.summary
        return build_actor(s["obs_dim"], s["act_dim"], s["hidden"], getattr(self, which)["actor"])

    def replay(self) -> ReplayBuffer:
        with np.load(self.dir / "medium_replay.npz") as f:
            return ReplayBuffer.from_state({k: f[k] for k in f.files})


def cache_key(cfg: Any) -> dict[str, Any]:
    sac = cast(dict[str, Any], OmegaConf.to_container(cfg.sac, resolve=True))
    sac.pop("checkpoint_every")  # resuming is exact: the cadence cannot change the result
    return {
        "format": CACHE_FORMAT,
        "env": cfg.env,
        "max_episode_steps": cfg.max_episode_steps,
        "seed": int(cfg.seed),
        "sac": sac,
        "medium_fraction": float(cfg.medium_fraction),
        "ref_episodes": int(cfg.ref_episodes),
        "threads": int(cfg.threads),
    }


def behaviour_dir(cfg: Any) -> Path:
    root = Path(cfg.out_dir).expanduser() if cfg.out_dir else user_cache_dir()
    key = json.dumps(cache_key(cfg), sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    env = cfg.env.replace("/", "_")
    return root / "behaviour" / env / f"seed{int(cfg.seed)}" / f"sac-{digest}"


def random_return(cfg: Any) -> float:
    """Mean return of the uniform policy on the reference episodes."""
    vec = make_vector_env(cfg.env, int(cfg.ref_episodes), cfg.max_episode_steps)
    try:
        act_dim = cast(Box, vec.single_action_space).shape[0]
        policy = uniform_policy(act_dim, numpy_generator(cfg.seed, "ref"))
        return mean_return(vec, policy, int(cfg.seed), REF_OFFSET)
    finally:
        vec.close()


def select_medium(evals: list[float], r_random: float, r_expert: float, fraction: float) -> int:
    """Index of the first eval return >= r_random + fraction·(r_expert − r_random)."""
    threshold = r_random + fraction * (r_expert - r_random)
    for i, ret in enumerate(evals):
        if ret >= threshold:
            return i
    return int(np.argmax(evals))  # unreachable when the expert itself is among the evals


def load(directory: Path) -> Behaviour | None:
    if not (directory / "summary.json").is_file():
        return None
    summary = json.loads((directory / "summary.json").read_text())
    policies = {name: torch.load(directory / f"{name}.pt", weights_only=True) for name in ("expert", "medium")}
    return Behaviour(directory, summary, policies["expert"], policies["medium"])


def load_or_train(cfg: Any) -> Behaviour:
    """The cached behaviour policies for ``cfg``, training (or resuming) SAC if needed."""
    directory = behaviour_dir(cfg)
    cached = load(directory)
    if cached is not None:
        log.info("reusing behaviour policies from %s", directory)
        return cached
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(cache_key(cfg), indent=2, sort_keys=True))
    log.info("training SAC on %s for %d steps (cache: %s)", cfg.env, cfg.sac.steps, directory)
    run = train_sac(
        cfg.env,
        cfg.sac,
        int(cfg.seed),
        cfg.max_episode_steps,
        ckpt_dir=directory / "train",
        progress=bool(cfg.progress),
    )
    return _finish(cfg, directory, run)


def _finish(cfg: Any, directory: Path, run: Any) -> Behaviour:
    snaps: list[Snapshot] = run.snapshots
    evals = [s.eval_return for s in snaps]
    expert = snaps[int(np.argmax(evals))]
    r_random = random_return(cfg)
    vec = make_vector_env(cfg.env, int(cfg.ref_episodes), cfg.max_episode_steps)
    obs_dim = cast(Box, vec.single_observation_space).shape[0]
    act_dim = cast(Box, vec.single_action_space).shape[0]
    hidden = list(cfg.sac.hidden)

    def ref(s: Snapshot) -> float:
        actor = build_actor(obs_dim, act_dim, hidden, s.actor)
        return mean_return(vec, actor_policy(actor, True), int(cfg.seed), REF_OFFSET)

    try:
        r_expert = ref(expert)
        medium = snaps[select_medium(evals, r_random, r_expert, float(cfg.medium_fraction))]
        r_medium = ref(medium)
    finally:
        vec.close()
    if r_expert <= r_random:
        log.warning("the SAC expert (%.1f) is no better than random (%.1f); raise sac.steps", r_expert, r_random)
    for name, s, r in (("expert", expert, r_expert), ("medium", medium, r_medium)):
        _atomic(
            directory / f"{name}.pt",
            lambda f, s=s, r=r: torch.save(
                {"actor": s.actor, "step": s.step, "eval_return": s.eval_return, "ref_return": r}, f
            ),
        )
    _atomic(directory / "medium_replay.npz", lambda f: np.savez(f, **run.replay.state(end=medium.step)))
    summary = {
        **cache_key(cfg),
        "obs_dim": obs_dim,
        "act_dim": act_dim,
        "hidden": hidden,
        "random_return": r_random,
        "expert_return": r_expert,
        "medium_return": r_medium,
        "threshold": r_random + float(cfg.medium_fraction) * (r_expert - r_random),
        "expert_step": expert.step,
        "medium_step": medium.step,
        "evals": [[s.step, s.eval_return] for s in snaps],
        "train_episodes": len(run.episode_returns),
        "updates": run.updates,
        "sac_seconds": run.seconds,
        "updates_per_second": run.updates_per_second,
    }
    _atomic(directory / "summary.json", lambda f: f.write(strict_json.dumps(summary, indent=2).encode()))
    shutil.rmtree(directory / "train", ignore_errors=True)
    loaded = load(directory)
    assert loaded is not None
    return loaded


def _atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
