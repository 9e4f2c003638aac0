"""Minari's Atari sets (``atari/<game>/expert-v0``) as single uint8 frames (:class:`FrameData`).

Those sets store the raw 210×160 RGB screens of ``ALE/<Game>-v5`` (frame skip 4, no sticky
actions) and one more observation per episode than steps. Each screen goes through the
``resize-grey`` pipeline of :mod:`cql_runner.discrete.atari` (gymnasium's ResizeObservation to
84×84, then GrayscaleObservation: what the data's own policy saw) as its episode is read, so the
data is held once, as 84×84 uint8 frames (7 KB a step, against 100 KB raw or 113 KB for a float32
4-stack); the sampler stacks ``dataset.frame_stack`` of them. An episode's final observation is
not kept (a frame dataset stores the frame each action was taken at): the last step of a
truncated episode has no next state and is never sampled, that of a terminated one needs none.

The dataset is named as for :class:`~cql_runner.data.minari_source.MinariSource` (``dataset.id``
in the Minari store, or ``dataset.path``). Nothing is cached: the frames take seconds to rebuild.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import minari
import numpy as np

from cql_runner.data.errors import DatasetCorruptError, DatasetError, one_line
from cql_runner.data.minari_source import MinariSource, build_meta, discrete_action_count, is_image_space
from cql_runner.data.types import DatasetMeta

from .atari import SCREEN, frame_transform
from .frames import FrameData

log = logging.getLogger(__name__)
_READ_ERRORS = (OSError, ValueError, KeyError, TypeError, AssertionError, EOFError)


class MinariAtariSource:
    """``cfg.dataset`` source for ``env=atari-<game>-expert``; ``load()`` returns :class:`FrameData`."""

    def __init__(self, cfg: Any = None, **kwargs: Any) -> None:
        self.locator = MinariSource(cfg, **kwargs)
        self.stack = int(kwargs.get("frame_stack", getattr(cfg, "frame_stack", 4)))

    def load(self) -> FrameData:
        data_dir, dataset_id, fix = self.locator.locate()
        start = time.perf_counter()
        try:
            dataset = minari.MinariDataset(data_dir)
            data = read_atari_frames(dataset, self.stack, data_dir)
        except DatasetError:
            raise
        except _READ_ERRORS as exc:
            raise DatasetCorruptError(f"cannot read the Minari dataset at {data_dir} ({one_line(exc)}); {fix}") from exc
        log.info(
            "read %s: %d frames of %dx%d uint8, %d episodes in %.1f s",
            dataset_id,
            data.size,
            SCREEN,
            SCREEN,
            len(data.episode_starts),
            time.perf_counter() - start,
        )
        return data


def read_atari_frames(dataset: minari.MinariDataset, stack: int, data_dir: Path | None = None) -> FrameData:
    space = dataset.observation_space
    if not (is_image_space(space) and len(space.shape) == 3 and space.shape[-1] == 3):
        raise DatasetError(
            f"dataset '{dataset.id}' observes {space}, not RGB screens; the atari-<game>-expert presets are "
            "for Minari's atari/<game>/expert-v0 sets (drop dataset._target_ for vector observations)"
        )
    n_actions = discrete_action_count(dataset.action_space)
    if n_actions is None:
        raise DatasetError(
            f"dataset '{dataset.id}' has {dataset.action_space} actions; Atari frame data needs Discrete"
        )
    to_frame = frame_transform(space)
    total = int(dataset.total_steps)
    frames = np.empty((total, SCREEN, SCREEN), np.uint8)
    actions = np.empty(total, np.int64)
    rewards = np.empty(total, np.float32)
    terminals = np.empty(total, np.float32)
    starts: list[int] = []
    row = 0
    for ep in dataset.iterate_episodes():
        n = len(ep.rewards)
        if n == 0:
            continue
        if row + n > total or len(ep.observations) != n + 1:
            raise DatasetCorruptError(
                f"episode {ep.id} has {len(ep.observations)} observations for {n} steps, or more steps than the "
                f"{total} the metadata counts; re-download the dataset"
            )
        for t in range(n):  # the final observation (index n) is not a step's frame
            frames[row + t] = to_frame(ep.observations[t])
        actions[row : row + n] = np.asarray(ep.actions).reshape(n)
        rewards[row : row + n] = np.asarray(ep.rewards, np.float32).reshape(n)
        terminals[row : row + n] = np.asarray(ep.terminations, np.float32).reshape(n)
        starts.append(row)
        row += n
    if not starts:
        raise DatasetError(f"dataset '{dataset.id}' has no transitions")
    if row != total:
        frames, actions, rewards, terminals = frames[:row], actions[:row], rewards[:row], terminals[:row]
    return FrameData(
        frames=frames,
        actions=actions,
        rewards=rewards,
        terminals=terminals,
        episode_starts=np.asarray(starts, np.int64),
        stack=stack,
        meta=atari_meta(dataset, n_actions, stack, data_dir),
    )


def atari_meta(dataset: minari.MinariDataset, n_actions: int, stack: int, data_dir: Path | None) -> DatasetMeta:
    """The Minari metadata, plus the frame pipeline and ALE settings the data was recorded with."""
    meta = build_meta(dataset, None, None, None, data_dir, n_actions)
    spec = json.loads(meta.eval_env_spec) if meta.eval_env_spec else {}
    kwargs = spec.get("kwargs") or {}
    meta.extra.update(
        {
            "frame_stack": stack,
            "atari": {
                "pipeline": "resize-grey",
                "frameskip": int(kwargs.get("frameskip", 4)),
                "repeat_action_probability": float(kwargs.get("repeat_action_probability", 0.0)),
            },
        }
    )
    return meta
