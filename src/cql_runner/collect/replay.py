"""The replay buffer of online SAC: every transition of the run, in the order it happened.

Nothing is ever evicted (capacity = the SAC budget), because the buffer doubles as the
record the ``medium-replay`` dataset is cut from. Observations are kept as float64, the
env's own precision, so the dataset stores exactly what the env returned; batches are cast
to float32 on the way out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cql_runner.data.spaces import from_unit_actions
from cql_runner.data.types import Batch
from cql_runner.rollout import Episode

_FIELDS = ("obs", "next_obs", "actions", "rewards", "terminated", "truncated", "episode")


class ReplayBuffer:
    """Rows t = (s_t, a_t in [-1, 1], r_t, s_{t+1}, terminated, truncated, episode id)."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int) -> None:
        self.capacity = int(capacity)
        self.obs = np.zeros((capacity, obs_dim), np.float64)
        self.next_obs = np.zeros((capacity, obs_dim), np.float64)
        self.actions = np.zeros((capacity, act_dim), np.float32)
        self.rewards = np.zeros(capacity, np.float64)
        self.terminated = np.zeros(capacity, bool)
        self.truncated = np.zeros(capacity, bool)
        self.episode = np.zeros(capacity, np.int64)
        self.size = 0
        # Reset seed of each episode, indexed by episode id (ids count up from 0).
        self.episode_seeds: list[int] = []

    def start_episode(self, seed: int) -> int:
        self.episode_seeds.append(int(seed))
        return len(self.episode_seeds) - 1

    def add(
        self,
        obs: np.ndarray,
        action: np.ndarray,
        reward: float,
        next_obs: np.ndarray,
        terminated: bool,
        truncated: bool,
        episode: int,
    ) -> None:
        i = self.size
        if i >= self.capacity:
            raise RuntimeError(f"replay buffer full ({self.capacity} rows)")
        self.obs[i], self.actions[i], self.rewards[i] = obs, action, reward
        self.next_obs[i], self.terminated[i], self.truncated[i] = next_obs, terminated, truncated
        self.episode[i] = episode
        self.size = i + 1

    def sample(self, rng: np.random.Generator, batch_size: int) -> Batch:
        """A uniform batch with leading dims (1, B), as CQLAgent.update takes it."""
        idx = rng.integers(0, self.size, batch_size)

        def take(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(a[idx].astype(np.float32)).unsqueeze(0)

        return Batch(take(self.obs), take(self.actions), take(self.rewards), take(self.next_obs), take(self.terminated))

    # ----- persistence --------------------------------------------------------------------
    def state(self, end: int | None = None) -> dict[str, Any]:
        """The first ``end`` rows as plain arrays; by default everything, including the seeds
        of episodes that have started but have no rows yet (so a resumed run goes on exactly)."""
        seeds = self.episode_seeds
        if end is not None:
            seeds = seeds[: int(self.episode[: int(end)].max()) + 1] if end > 0 else []
        end = self.size if end is None else int(end)
        out: dict[str, Any] = {name: getattr(self, name)[:end].copy() for name in _FIELDS}
        out["episode_seeds"] = np.asarray(seeds, np.int64)
        return out

    @classmethod
    def from_state(cls, state: dict[str, Any], capacity: int | None = None) -> ReplayBuffer:
        n = len(state["rewards"])
        buf = cls(max(n, capacity or 0), state["obs"].shape[1], state["actions"].shape[1])
        for name in _FIELDS:
            getattr(buf, name)[:n] = state[name]
        buf.size = n
        buf.episode_seeds = [int(s) for s in state["episode_seeds"]]
        return buf

    # ----- the medium-replay dataset ------------------------------------------------------
    def episodes(self, low: np.ndarray, high: np.ndarray, end: int | None = None) -> list[Episode]:
        """Rows [0, end) as episodes, ordered by when they started.

        An episode still running at ``end`` is cut there and its last step marked truncated
        (the data goes on, so a learner must bootstrap through it). Actions come back in env
        units, exactly the values the env received.
        """
        end = self.size if end is None else min(int(end), self.size)
        ids = self.episode[:end]
        order = np.argsort(ids, kind="stable")
        unique, starts = np.unique(ids[order], return_index=True)
        bounds = [*starts.tolist(), end]
        out = []
        for j, ep_id in enumerate(unique.tolist()):
            rows = order[bounds[j] : bounds[j + 1]]
            terminated = self.terminated[rows].copy()
            truncated = self.truncated[rows].copy()
            if not (terminated[-1] or truncated[-1]):
                truncated[-1] = True
            unit = self.actions[rows].copy()
            out.append(
                Episode(
                    agent=0,
                    index=j,
                    seed=self.episode_seeds[ep_id],
                    obs=np.concatenate([self.obs[rows], self.next_obs[rows[-1:]]]),
                    actions=from_unit_actions(unit, low, high),
                    unit_actions=unit,
                    rewards=self.rewards[rows].copy(),
                    terminations=terminated,
                    truncations=truncated,
                )
            )
        return out
