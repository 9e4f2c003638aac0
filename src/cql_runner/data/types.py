"""The flat, in-memory form every dataset source produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from torch import Tensor


class Batch(NamedTuple):
    """A batch of transitions per agent, on the device: leading dims (K, B)."""

    obs: Tensor
    actions: Tensor
    rewards: Tensor
    next_obs: Tensor
    # 1 only for true terminations: a time-limit truncation still bootstraps.
    terminals: Tensor
    # Monte-Carlo return-to-go of each transition (K, B): the Cal-QL bound. None where the
    # source keeps none.
    returns_to_go: Tensor | None = None


@dataclass
class DatasetMeta:
    """What the trainer and evaluator need to know about where the data came from."""

    dataset_id: str
    # Gymnasium id to evaluate in, and the full env spec as JSON when the source stores one.
    eval_env_id: str | None = None
    eval_env_spec: str | None = None
    ref_min_score: float | None = None
    ref_max_score: float | None = None
    # Bounds of the env's Box action space; stored actions are rescaled to [-1, 1].
    action_low: np.ndarray | None = None
    action_high: np.ndarray | None = None
    # Key order used to flatten Dict observations; None for Box observations.
    obs_keys: list[str] | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class OfflineData:
    """Transitions as float32 arrays, one row per step.

    ``terminals`` is 1 only for a true termination (the TD target does not bootstrap);
    ``timeouts`` marks time-limit truncations, which still bootstrap. Actions lie in [-1, 1].
    """

    observations: np.ndarray  # (T, obs_dim)
    actions: np.ndarray  # (T, act_dim)
    rewards: np.ndarray  # (T,)
    next_observations: np.ndarray  # (T, obs_dim)
    terminals: np.ndarray  # (T,)
    timeouts: np.ndarray  # (T,)
    # Index of the first transition of each episode, ascending.
    episode_starts: np.ndarray  # (E,) int64
    meta: DatasetMeta

    @property
    def size(self) -> int:
        return int(self.observations.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    def returns_to_go(self, discount: float, sparse_reward_neg: float | None = None) -> np.ndarray:
        """Discounted Monte-Carlo return from each transition to the end of its episode (T,).

        See :func:`cql_runner.data.returns.episode_returns_to_go` for truncated and
        sparse-reward episodes. Accumulated in float64 one episode at a time: float64 copies
        of the whole column (two of them, 16 MB per 1M steps) were allocated and freed at load
        time, and glibc could keep them resident for the run (scripts/bench_memory.py).
        """
        from cql_runner.data.returns import returns_to_go

        return returns_to_go(
            rewards=self.rewards,
            episode_starts=self.episode_starts,
            discount=discount,
            sparse_reward_neg=sparse_reward_neg,
        )

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of each episode, in dataset order."""
        return np.add.reduceat(self.rewards.astype(np.float64), self.episode_starts)
