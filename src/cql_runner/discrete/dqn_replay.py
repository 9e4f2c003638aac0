"""The DQN Replay Dataset (Agarwal et al. 2020), the data of the CQL paper's Atari results.

Layout, as published (``gs://atari-replay-datasets/dqn/<Game>/<run>/replay_logs/``): for each
checkpoint N, the files ``$store$_observation_ckpt.N.gz`` (uint8 (T, 84, 84) frames),
``$store$_action_ckpt.N.gz`` (int32), ``$store$_reward_ckpt.N.gz`` (float32, clipped to
[−1, 1] as Dopamine stored them) and ``$store$_terminal_ckpt.N.gz`` (uint8), each a gzipped
``.npy`` array. Row t holds the frame at which action t was taken; terminal t marks the end of
an episode. Each checkpoint is read in order, its first row starting an episode (the one that
ran over from the previous checkpoint is cut there, and its last unfinished episode too).

``dataset.path`` is the folder holding the games (then ``game`` and ``dataset.run`` pick
``<path>/<game>/<run>/replay_logs``) or a ``replay_logs`` folder itself. ``dataset.fraction``
in (0, 1] keeps the first fraction of every checkpoint: 0.01 and 0.1 are the 1% and 10% settings
of the CQL paper (which subsamples each checkpoint the same way, contiguously so episodes stay
whole). Frames stay uint8 and single: the sampler stacks ``dataset.frame_stack`` of them.
"""

from __future__ import annotations

import gzip
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from cql_runner.data.errors import DatasetError, DatasetNotFoundError
from cql_runner.data.types import DatasetMeta
from cql_runner.discrete.atari import DOPAMINE
from cql_runner.discrete.frames import FrameData

FIELDS = ("observation", "action", "reward", "terminal")
_OBS = re.compile(r"^\$store\$_observation_ckpt\.(\d+)\.gz$")


def replay_file(folder: Path, field: str, checkpoint: int) -> Path:
    return folder / f"$store$_{field}_ckpt.{checkpoint}.gz"


def read_rows(path: Path, fraction: float) -> np.ndarray:
    """The first ⌈fraction·T⌉ rows of a gzipped .npy array, without decompressing the rest."""
    with gzip.open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        if fortran:
            raise DatasetError(f"{path} holds a Fortran-ordered array; the DQN replay files are C-ordered")
        rows = max(1, math.ceil(fraction * shape[0]))
        per_row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        buffer = f.read(rows * per_row)
    if len(buffer) != rows * per_row:
        raise DatasetError(f"{path} is truncated ({len(buffer)} of {rows * per_row} bytes); re-download it")
    return np.frombuffer(buffer, dtype=dtype).reshape(rows, *shape[1:])


class DQNReplaySource:
    """``cfg.dataset`` source for ``env=atari-replay``; ``load()`` returns :class:`FrameData`."""

    def __init__(self, cfg: Any = None, **kwargs: Any) -> None:
        def get(name: str, default: Any = None) -> Any:
            return kwargs.get(name, getattr(cfg, name, default))

        self.path, self.game = get("path"), get("game")
        self.run, self.fraction = int(get("run", 1)), float(get("fraction", 1.0))
        self.stack = int(get("frame_stack", 4))

    def folder(self) -> Path:
        if not self.path:
            raise DatasetError("env=atari-replay needs the data: pass dataset.path=<DIR with <Game>/<run>/replay_logs>")
        root = Path(str(self.path)).expanduser()
        if any(root.glob("$store$_observation_ckpt.*.gz")):
            return root
        if not self.game:
            raise DatasetError(
                f"{root} holds no replay_logs; pass game=<Game> (e.g. game=Pong) to pick "
                f"{root}/<Game>/{self.run}/replay_logs"
            )
        folder = root / str(self.game) / str(self.run) / "replay_logs"
        if not folder.is_dir():
            source = f"gs://atari-replay-datasets/dqn/{self.game}/{self.run}"
            raise DatasetNotFoundError(
                f"no DQN replay data at {folder}; download it with `gsutil -m cp -R {source} {root / str(self.game)}`"
            )
        return folder

    def load(self) -> FrameData:
        if not 0 < self.fraction <= 1:
            raise DatasetError(
                f"dataset.fraction must be in (0, 1] (got {self.fraction}); 0.01 and 0.1 are the "
                "CQL paper's 1% and 10% settings"
            )
        folder = self.folder()
        checkpoints = sorted(int(m.group(1)) for p in folder.iterdir() if (m := _OBS.match(p.name)))
        if not checkpoints:
            raise DatasetNotFoundError(f"{folder} has no $store$_observation_ckpt.N.gz files")
        parts: dict[str, list[np.ndarray]] = {f: [] for f in FIELDS}
        starts: list[np.ndarray] = []
        offset = 0
        for n in checkpoints:
            missing = [replay_file(folder, f, n).name for f in FIELDS if not replay_file(folder, f, n).is_file()]
            if missing:
                raise DatasetError(
                    f"checkpoint {n} in {folder} lacks {', '.join(missing)}; download the whole "
                    "checkpoint again or delete its other files"
                )
            rows = {f: read_rows(replay_file(folder, f, n), self.fraction) for f in FIELDS}
            length = len(rows["observation"])
            if any(len(r) != length for r in rows.values()):
                raise DatasetError(f"checkpoint {n} in {folder} has files of different lengths; re-download it")
            for f in FIELDS:
                parts[f].append(rows[f])
            ends = np.flatnonzero(rows["terminal"][:-1]) + 1
            starts.append(np.concatenate([[0], ends]) + offset)
            offset += length
        actions = np.concatenate(parts["action"]).astype(np.int64)
        game = str(self.game or folder.parent.parent.name)
        meta = DatasetMeta(
            dataset_id=f"dqn-replay/{game}/{self.run}",
            eval_env_id=f"ALE/{game}-v5",
            extra={
                "source": "dqn-replay",
                "n_actions": int(actions.max()) + 1,
                "frame_stack": self.stack,
                "atari": DOPAMINE,
                "fraction": self.fraction,
                "checkpoints": checkpoints,
                "data_path": str(folder),
            },
        )
        return FrameData(
            frames=np.concatenate(parts["observation"]),
            actions=actions,
            rewards=np.concatenate(parts["reward"]).astype(np.float32),
            terminals=np.concatenate(parts["terminal"]).astype(np.float32),
            episode_starts=np.concatenate(starts).astype(np.int64),
            stack=self.stack,
            meta=meta,
        )
