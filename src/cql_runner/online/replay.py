"""The online buffer of fine-tuning: the project's ReplayBuffer, filled one finished episode at a time.

A transition enters the sampled pool only when its episode has ended and its return-to-go is
known (the Cal-QL bound needs it), so rows are committed episode by episode. Rows hold what the
learner sees: flattened (and, if the run normalises, normalised) observations, actions in
[-1, 1], and rewards after the env's reward transform.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cql_runner.collect.replay import ReplayBuffer
from cql_runner.data.returns import episode_returns_to_go


class OnlineReplay(ReplayBuffer):
    """A ReplayBuffer with a return-to-go column, added to by whole episodes."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int) -> None:
        super().__init__(capacity, obs_dim, act_dim)
        self.returns_to_go = np.zeros(self.capacity, np.float32)

    def add_episode(
        self,
        episode: int,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        *,
        discount: float,
        sparse_reward_neg: float | None,
    ) -> None:
        """Compute the episode's returns-to-go, then append its L rows (each array has L rows)."""
        start = self.size
        rtg = episode_returns_to_go(rewards=rewards, discount=discount, sparse_reward_neg=sparse_reward_neg)
        for t in range(len(rewards)):
            self.add(
                obs[t], actions[t], float(rewards[t]), next_obs[t], bool(terminated[t]), bool(truncated[t]), episode
            )
        self.returns_to_go[start : self.size] = rtg

    def gather(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        """Rows ``idx`` (n,) as float32 tensors in Batch's field names."""

        def take(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a[idx], dtype=np.float32))

        return {
            "obs": take(self.obs),
            "actions": take(self.actions),
            "rewards": take(self.rewards),
            "next_obs": take(self.next_obs),
            "terminals": take(self.terminated),
            "returns_to_go": take(self.returns_to_go),
        }

    def state(self, end: int | None = None) -> dict[str, Any]:
        out = super().state(end)
        out["returns_to_go"] = self.returns_to_go[: len(out["rewards"])].copy()
        return out

    @classmethod
    def from_state(cls, state: dict[str, Any], capacity: int | None = None) -> OnlineReplay:
        buf = super().from_state(state, capacity)
        assert isinstance(buf, OnlineReplay)
        buf.returns_to_go[: buf.size] = state["returns_to_go"]
        return buf
