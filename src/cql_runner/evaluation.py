"""Deterministic policy evaluation and the D4RL normalized score.

One :class:`Evaluator` serves a whole run: it builds its vector env on first use and keeps it,
and every evaluation resets each env with an explicit seed, so evaluating the same policy twice
gives the same numbers.
"""

from __future__ import annotations

import logging
import math
from typing import Protocol, runtime_checkable

import numpy as np
from gymnasium.vector import SyncVectorEnv
from omegaconf import DictConfig

from cql_runner.config import ConfigError, EnvConfig, EvalConfig
from cql_runner.data.types import DatasetMeta
from cql_runner.envs import make_env, make_vector_env
from cql_runner.rollout import Policy, env_seeds, rollout

log = logging.getLogger(__name__)

MISSING_REFS = "the dataset metadata and env config lack reference scores; set env.ref_min_score and env.ref_max_score"


def normalized_score(ret: float, ref_min: float | None, ref_max: float | None) -> float:
    """D4RL normalized score: 100 · (R − min) / (max − min). 0 is the reference minimum
    (random), 100 the reference maximum (expert)."""
    if ref_min is None or ref_max is None or math.isnan(ref_min) or math.isnan(ref_max):
        raise ValueError(MISSING_REFS)
    if ref_max == ref_min:
        raise ValueError(
            f"the reference scores are equal (min = max = {ref_min}); set env.ref_min_score below env.ref_max_score"
        )
    return 100.0 * (float(ret) - ref_min) / (ref_max - ref_min)


@runtime_checkable
class PolicyEvaluator(Protocol):
    """What the trainer and ``run()`` need of an evaluator. ``eval._target_`` names the class, which
    is built as ``cls(cfg.eval, data.meta, cfg.env)``; :class:`Evaluator` is the default."""

    # The Gymnasium id episodes run in (the video recorder renders the same env).
    env_id: str

    def evaluate(self, policy: Policy, seeds: list[int]) -> list[dict[str, float]]:
        """One ``eval/*`` metrics dict per agent, with at least ``eval/return`` and ``eval/normalized_score``."""
        ...

    def close(self) -> None: ...


def reference_scores(meta: DatasetMeta, env_cfg: EnvConfig | DictConfig) -> tuple[float | None, float | None]:
    """(min, max) from the dataset metadata when it has both, else from the env config."""
    for source in (meta, env_cfg):
        lo = getattr(source, "ref_min_score", None)
        hi = getattr(source, "ref_max_score", None)
        if lo is not None and hi is not None:
            return float(lo), float(hi)
    return None, None


def resolve_env_id(cfg: EvalConfig | DictConfig, meta: DatasetMeta) -> str:
    """``eval.env_id`` if set, else the env the dataset was recorded in."""
    env_id = getattr(cfg, "env_id", None) or meta.eval_env_id
    if not env_id:
        raise ConfigError(
            f"no evaluation env: dataset {meta.dataset_id!r} does not name one; "
            "pass eval.env_id=<Gym id> (e.g. eval.env_id=Hopper-v5)"
        )
    return str(env_id)


class Evaluator:
    """Runs ``cfg.episodes`` deterministic episodes per agent and reports ``eval/*`` metrics."""

    def __init__(self, cfg: EvalConfig | DictConfig, meta: DatasetMeta, env_cfg: EnvConfig | DictConfig) -> None:
        self.env_id = resolve_env_id(cfg, meta)
        self.episodes = int(cfg.episodes)
        self.max_episode_steps = None if cfg.max_episode_steps is None else int(cfg.max_episode_steps)
        self.seed_offset = int(cfg.seed_offset)
        self.obs_keys = list(meta.obs_keys) if meta.obs_keys is not None else None
        self.action_low = meta.action_low
        self.action_high = meta.action_high
        self.ref_min, self.ref_max = reference_scores(meta, env_cfg)
        if self.ref_min is None:
            # A run without refs is still worth having: report returns, score NaN.
            log.warning("eval/normalized_score will be NaN: %s", MISSING_REFS)
        else:
            normalized_score(0.0, self.ref_min, self.ref_max)  # equal refs fail here, early
        env_seeds([0], self.episodes, self.seed_offset)  # bad episodes/offset fail early
        self._probe_env()
        self._vec: SyncVectorEnv | None = None

    def _probe_env(self) -> None:
        """Build one env now so a bad id or a mismatched dataset fails before training."""
        env = make_env(self.env_id, self.max_episode_steps)
        try:
            shape = env.action_space.shape
            for name, bound in (("action_low", self.action_low), ("action_high", self.action_high)):
                if bound is not None and np.shape(bound) != shape:
                    raise ValueError(
                        f"dataset {name} has shape {np.shape(bound)} but {self.env_id} "
                        f"has action shape {shape}; check eval.env_id"
                    )
        finally:
            env.close()

    def _vector_env(self, n: int) -> SyncVectorEnv:
        # Rebuilt only when the number of agents changes; reset seeds make reuse safe.
        if self._vec is None or self._vec.num_envs != n:
            self.close()
            self._vec = make_vector_env(self.env_id, n, self.max_episode_steps)
        return self._vec

    def _score(self, mean_return: float) -> float:
        if self.ref_min is None:
            return math.nan
        return normalized_score(mean_return, self.ref_min, self.ref_max)

    def evaluate(self, policy: Policy, seeds: list[int]) -> list[dict[str, float]]:
        """One metrics dict per agent. ``policy`` maps (K, E, obs_dim) float32 observations to
        (K, E, act_dim) actions in [-1, 1], where K = len(seeds) and E = cfg.episodes."""
        seeds = [int(s) for s in seeds]
        vec = self._vector_env(len(seeds) * self.episodes)
        result = rollout(
            vec,
            policy,
            seeds,
            self.episodes,
            self.obs_keys,
            self.action_low,
            self.action_high,
            seed_offset=self.seed_offset,
        )
        metrics = []
        for returns, lengths in zip(result.returns, result.lengths):
            mean = float(returns.mean())
            metrics.append(
                {
                    "eval/return": mean,
                    "eval/return_std": float(returns.std()),
                    "eval/length": float(lengths.mean()),
                    "eval/normalized_score": self._score(mean),
                    "eval/episodes": float(self.episodes),
                }
            )
        return metrics

    def close(self) -> None:
        if self._vec is not None:
            self._vec.close()
            self._vec = None

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
