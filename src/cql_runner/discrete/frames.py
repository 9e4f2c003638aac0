"""Image datasets kept as single uint8 frames, stacked at sampling time without copies.

A frame dataset stores one (H, W) uint8 frame per step: frame t is the observation at which
action t was taken. The state of row t is the stack of frames t−S+1 … t, where frames from
before the episode's start repeat its first frame (gymnasium's FrameStackObservation pads the
same way at reset); the next state of an n-step row is the stack ending at frame
bootstrap_index + 1. Nothing is stacked in memory: a batch gathers S frames per state from the
one uint8 array on the device, so 1M 84×84 frames take 7 GB (plus 8 bytes a frame of index),
not 4× that for stored stacks or 4× again for float32.

A row is sampled only if its next state is in the data: when the n-step window ends at a
non-terminal episode end (a truncation, or the data's end), the frame after it was never
recorded, so that row is left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cql_runner.data.buffer import SAMPLER_SEED_OFFSET
from cql_runner.data.returns import returns_to_go
from cql_runner.data.types import DatasetMeta

from .nstep import n_step_transitions
from .sampler import DiscreteBatch


@dataclass
class FrameData:
    frames: np.ndarray  # (F, H, W) uint8
    actions: np.ndarray  # (F,) int64
    rewards: np.ndarray  # (F,) float32
    terminals: np.ndarray  # (F,) float32: the episode ended with this step
    episode_starts: np.ndarray  # (E,) int64, ascending
    stack: int
    meta: DatasetMeta

    @property
    def size(self) -> int:
        return int(self.frames.shape[0])

    @property
    def obs_shape(self) -> tuple[int, int, int]:
        return (self.stack, *self.frames.shape[1:])

    def episode_returns(self) -> np.ndarray:
        return np.add.reduceat(self.rewards.astype(np.float64), self.episode_starts)


def episode_start_of_each_frame(episode_starts: np.ndarray, size: int) -> np.ndarray:
    counts = np.diff(np.append(episode_starts, size))
    return np.repeat(np.asarray(episode_starts, np.int64), counts)


class FrameSampler:
    """Uniform n-step batches of stacked uint8 frames for K agents: obs (K, B, S, H, W) uint8."""

    def __init__(
        self, data: FrameData, seeds: Sequence[int], device: torch.device | str, *, discount: float, n_step: int
    ) -> None:
        self.device = torch.device(device)
        nstep = n_step_transitions(
            rewards=data.rewards,
            terminals=data.terminals,
            episode_starts=data.episode_starts,
            discount=discount,
            n=n_step,
        )
        start = episode_start_of_each_frame(data.episode_starts, data.size)
        boot = nstep.bootstrap_index
        terminal = data.terminals[boot] > 0
        next_frame = np.minimum(boot + 1, data.size - 1)
        has_next = (boot + 1 < data.size) & (start[next_frame] == start[boot])
        valid = np.flatnonzero(terminal | has_next)
        if len(valid) == 0:
            raise ValueError("no row of the frame data has a recorded next state")
        self.size = len(valid)
        put = lambda a, dt=None: torch.as_tensor(np.ascontiguousarray(a), device=self.device, dtype=dt)  # noqa: E731
        self.frames = put(data.frames)  # stays uint8
        self.episode_start = put(start)
        self.valid = put(valid)
        self.actions = put(data.actions, torch.int64)
        self.rewards = put(nstep.returns)
        self.discounts = put(nstep.discounts)
        # After a termination the next state is never used (discount 0): point it at the row itself.
        self.next_index = put(np.where(terminal, boot, next_frame))
        self.offsets = torch.arange(-data.stack + 1, 1, device=self.device)
        self.returns_to_go = put(
            returns_to_go(rewards=data.rewards, episode_starts=data.episode_starts, discount=discount)
        )
        self.last_indices: Tensor | None = None
        self.generators = [torch.Generator(self.device).manual_seed(int(s) + SAMPLER_SEED_OFFSET) for s in seeds]

    def stacks(self, index: Tensor) -> Tensor:
        """Frames index−S+1 … index, clamped to each one's episode start: (..., S, H, W) uint8."""
        window = torch.maximum(index.unsqueeze(-1) + self.offsets, self.episode_start[index].unsqueeze(-1))
        return self.frames[window]

    def sample(self, batch_size: int) -> DiscreteBatch:
        pick = torch.stack(
            [torch.randint(self.size, (batch_size,), generator=g, device=self.device) for g in self.generators]
        )
        idx = self.valid[pick]
        self.last_indices = idx
        return DiscreteBatch(
            obs=self.stacks(idx),
            actions=self.actions[idx],
            rewards=self.rewards[idx],
            next_obs=self.stacks(self.next_index[idx]),
            discounts=self.discounts[idx],
        )

    def last_mc_returns(self) -> Tensor | None:
        return None if self.last_indices is None else self.returns_to_go[self.last_indices].mean(-1)

    def nbytes(self) -> int:
        tensors = (
            self.frames,
            self.episode_start,
            self.valid,
            self.actions,
            self.rewards,
            self.discounts,
            self.next_index,
            self.returns_to_go,
        )
        return sum(t.numel() * t.element_size() for t in tensors)

    def state_dict(self) -> dict[str, Any]:
        return {"generators": [g.get_state() for g in self.generators]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for g, s in zip(self.generators, state["generators"]):
            g.set_state(s)


def prepare_frames(data: FrameData, reward_scale: float, reward_bias: float, normalize_obs: bool) -> FrameData:
    """The env's load-time transforms for frame data: rewards r' = scale·r + bias; frames are never
    standardised (they are scaled to [0, 1] inside the CNN)."""
    from cql_runner.config import ConfigError
    from cql_runner.data.errors import DatasetError

    if normalize_obs:
        raise ConfigError("env.normalize_obs=true does not apply to image frames; drop it")
    if not np.isfinite(data.rewards).all():
        raise DatasetError(f"dataset {data.meta.dataset_id}: rewards hold NaN/inf values; repair the data")
    if reward_scale != 1.0 or reward_bias != 0.0:
        data.rewards = (reward_scale * data.rewards + reward_bias).astype(np.float32)
    return data
