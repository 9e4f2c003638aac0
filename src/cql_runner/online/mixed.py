"""Fine-tuning batches: a fixed share from the offline data, the rest from each seed's online buffer.

With ``offline_ratio`` r and batch B, every batch holds exactly round(r·B) offline rows first and
B − round(r·B) online rows after them, per seed. Each seed draws its online rows with its own
generator, so seed k's batches do not depend on the other seeds of a vectorised run, nor on
when they start drawing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from cql_runner.data.buffer import DeviceSampler
from cql_runner.data.types import Batch
from cql_runner.online.replay import OnlineReplay

# Keeps the online-row stream apart from the seed's other streams.
ONLINE_SAMPLER_SEED_OFFSET = 15_485_863


class MixedSampler:
    def __init__(
        self,
        offline: DeviceSampler,
        online: Sequence[OnlineReplay],
        seeds: Sequence[int],
        batch_size: int,
        offline_ratio: float,
        device: torch.device | str,
    ) -> None:
        if len(online) != len(seeds):
            raise ValueError(f"one online buffer per seed: {len(online)} buffers for {len(seeds)} seeds")
        self.offline, self.online = offline, list(online)
        self.batch_size = int(batch_size)
        self.n_offline = round(float(offline_ratio) * self.batch_size)
        self.n_online = self.batch_size - self.n_offline
        self.device = torch.device(device)
        self.generators = [torch.Generator().manual_seed(int(s) + ONLINE_SAMPLER_SEED_OFFSET) for s in seeds]

    def ready(self) -> list[bool]:
        """Per seed, whether a batch can be drawn: its online buffer has rows, unless none are asked for."""
        return [self.n_online == 0 or buf.size > 0 for buf in self.online]

    @property
    def offline_share(self) -> float:
        return self.n_offline / self.batch_size

    def sample(self, active: Sequence[bool] | None = None) -> Batch:
        """A (K, B) batch: offline rows, then online rows, for the ``active`` seeds (default all;
        each must be :meth:`ready`). The other seeds' rows are zeros and none of their
        generators advances, so each seed's batches depend only on its own schedule."""
        active = [True] * len(self.online) if active is None else list(active)
        parts: list[dict[str, torch.Tensor]] = []
        if self.n_offline:
            off = self.offline.sample(self.n_offline, active)
            if off.returns_to_go is None:
                raise ValueError("the offline sampler keeps no returns-to-go; build it with discount=")
            parts.append(off._asdict())
        if self.n_online:
            rows = []
            for buf, g, on in zip(self.online, self.generators, active):
                if on:
                    idx = torch.randint(buf.size, (self.n_online,), generator=g).numpy()
                else:
                    idx = np.zeros(self.n_online, np.int64)  # rows of an empty buffer: zeros
                rows.append(buf.gather(idx))
            parts.append({name: torch.stack([r[name] for r in rows]).to(self.device) for name in rows[0]})
        return Batch(**{name: torch.cat([p[name] for p in parts], dim=1) for name in Batch._fields})

    def state_dict(self) -> dict[str, Any]:
        return {"generators": [g.get_state() for g in self.generators]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for g, s in zip(self.generators, state["generators"]):
            g.set_state(s)
