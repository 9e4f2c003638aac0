"""Device-resident uniform sampling of n-step discrete transitions.

The n-step view of the data (:mod:`.nstep`) is built once at start-up: row t holds s_t, a_t,
the n-step return, the observation it bootstraps from and the bootstrap discount γ^m·(1 − d).
Indices are drawn on the device from per-seed generators (the same streams as the continuous
sampler), so seed k of a K-seed run sees exactly the batches of a single run with seed k.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from cql_runner.data.buffer import SAMPLER_SEED_OFFSET
from cql_runner.data.types import OfflineData

from .nstep import n_step_transitions


class DiscreteBatch(NamedTuple):
    """A batch per agent: leading dims (K, B)."""

    obs: Tensor  # (K, B, obs_dim)
    actions: Tensor  # (K, B) int64
    rewards: Tensor  # (K, B) n-step returns
    next_obs: Tensor  # (K, B, obs_dim) s_{t+m}
    discounts: Tensor  # (K, B) γ^m·(1 − terminal)


class DiscreteSampler:
    """Uniform minibatches of n-step transitions for K agents, each from its own generator."""

    def __init__(
        self, data: OfflineData, seeds: Sequence[int], device: torch.device | str, *, discount: float, n_step: int
    ) -> None:
        self.device = torch.device(device)
        self.size = data.size
        nstep = n_step_transitions(
            rewards=data.rewards,
            terminals=data.terminals,
            episode_starts=data.episode_starts,
            discount=discount,
            n=n_step,
        )

        def put(array: np.ndarray, dtype: torch.dtype = torch.float32) -> Tensor:
            return torch.as_tensor(np.ascontiguousarray(array), device=self.device).to(dtype)

        self.observations = put(data.observations)
        self.actions = put(data.actions.reshape(-1), torch.int64)
        self.rewards = put(nstep.returns)
        # With n = 1 this is next_observations itself (no copy).
        index = nstep.bootstrap_index
        same = bool(np.array_equal(index, np.arange(self.size)))
        self.next_observations = put(data.next_observations if same else data.next_observations[index])
        self.discounts = put(nstep.discounts)
        self.returns_to_go = put(data.returns_to_go(discount))
        self.last_indices: Tensor | None = None
        self.generators = [torch.Generator(self.device).manual_seed(int(s) + SAMPLER_SEED_OFFSET) for s in seeds]

    def sample(self, batch_size: int) -> DiscreteBatch:
        idx = torch.stack(
            [torch.randint(self.size, (batch_size,), generator=g, device=self.device) for g in self.generators]
        )  # (K, B)
        self.last_indices = idx
        return DiscreteBatch(
            obs=self.observations[idx],
            actions=self.actions[idx],
            rewards=self.rewards[idx],
            next_obs=self.next_observations[idx],
            discounts=self.discounts[idx],
        )

    def last_mc_returns(self) -> Tensor | None:
        """Mean Monte-Carlo return of the last batch's states, per agent (K,)."""
        return None if self.last_indices is None else self.returns_to_go[self.last_indices].mean(-1)

    def state_dict(self) -> dict[str, Any]:
        return {"generators": [g.get_state() for g in self.generators]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for g, s in zip(self.generators, state["generators"]):
            g.set_state(s)
