"""Device-resident uniform sampling of offline transitions.

The flat dataset is copied to the device once; each step draws indices on the device from
per-seed generators and gathers a batch, so a step makes no host copies and no copy of
the dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from cql_runner.data.types import Batch, OfflineData

# Keeps the data-sampling stream apart from the update-noise stream of the same seed.
SAMPLER_SEED_OFFSET = 104_729


class DeviceSampler:
    """Uniform minibatches for K agents, each from its own generator: (K, B, ...)."""

    def __init__(
        self,
        data: OfflineData,
        seeds: Sequence[int],
        device: torch.device | str,
        discount: float | None = None,
        sparse_reward_neg: float | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.size = data.size

        def put(array: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(array, dtype=np.float32), device=self.device)

        self.observations = put(data.observations)
        self.actions = put(data.actions)
        self.rewards = put(data.rewards)
        self.next_observations = put(data.next_observations)
        self.terminals = put(data.terminals)
        # Monte-Carlo returns-to-go of the dataset's states: the yardstick for the learned Q.
        # Also the Cal-QL bound, which is why batches carry them. ``sparse_reward_neg`` is in the
        # units of ``data.rewards`` (after any reward transform).
        self.returns_to_go = put(data.returns_to_go(discount, sparse_reward_neg)) if discount is not None else None
        self.last_indices: torch.Tensor | None = None
        self.generators = [torch.Generator(self.device).manual_seed(int(s) + SAMPLER_SEED_OFFSET) for s in seeds]

    def sample(self, batch_size: int, active: Sequence[bool] | None = None) -> Batch:
        """(K, B) rows; a seed not ``active`` gets row 0 repeated and its generator does not advance."""
        idx = torch.stack(
            [
                torch.randint(self.size, (batch_size,), generator=g, device=self.device)
                if active is None or active[k]
                else torch.zeros(batch_size, dtype=torch.int64, device=self.device)
                for k, g in enumerate(self.generators)
            ]
        )  # (K, B)
        self.last_indices = idx
        return Batch(
            obs=self.observations[idx],
            actions=self.actions[idx],
            rewards=self.rewards[idx],
            next_obs=self.next_observations[idx],
            terminals=self.terminals[idx],
            returns_to_go=None if self.returns_to_go is None else self.returns_to_go[idx],
        )

    def last_mc_returns(self) -> torch.Tensor | None:
        """Mean Monte-Carlo return of the last batch's states, per agent (K,)."""
        if self.returns_to_go is None or self.last_indices is None:
            return None
        return self.returns_to_go[self.last_indices].mean(-1)

    def nbytes(self) -> int:
        tensors = (self.observations, self.actions, self.rewards, self.next_observations, self.terminals)
        return sum(t.numel() * t.element_size() for t in tensors)

    def state_dict(self) -> dict[str, Any]:
        return {"generators": [g.get_state() for g in self.generators]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for g, s in zip(self.generators, state["generators"]):
            g.set_state(s)
