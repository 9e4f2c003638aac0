"""Read a legacy D4RL hdf5 file (``hopper-medium-v2.hdf5`` and the like) into OfflineData.

Keys read: ``observations``, ``actions``, ``rewards``, ``terminals`` (required),
``timeouts`` and ``next_observations`` (optional, see below). Episodes end at a terminal
or a timeout.

With ``next_observations`` (all D4RL v2 files have it), every row is a transition as is.
Without it, the next observation is taken as ``observations[t+1]``, following
``d4rl.qlearning_dataset(terminate_on_end=False)``: a timeout row is dropped, because its
successor row starts the next episode, and so is the file's last row. Terminal rows are
kept (their next observation is never bootstrapped from, so its value does not matter).
Two deliberate differences from d4rl:

- a row that is both terminal and timeout is kept (d4rl drops it and loses the terminal);
- the row before a dropped timeout becomes its episode's last row and is marked as a
  timeout, so the episode boundary survives (d4rl's output forgets it).

In both modes a final row that is neither terminal nor timeout (data cut mid-episode) is
marked as a timeout: the episode was truncated there.

D4RL locomotion actions already lie in [-1, 1]. Bounds are taken from ``action_low`` /
``action_high`` (file attributes or ``metadata/`` datasets) when a file has them, else
[-1, 1] is assumed and recorded in ``meta.extra["action_bounds_assumed"]``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import h5py
import numpy as np

from cql_runner.data.errors import (
    DatasetCorruptError,
    DatasetError,
    DatasetNotFoundError,
    one_line,
)
from cql_runner.data.spaces import to_unit_actions
from cql_runner.data.types import DatasetMeta, OfflineData

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")
OPTIONAL_KEYS = ("timeouts", "next_observations")


class D4RLFileSource:
    """A dataset source reading ``cfg.path``, a D4RL hdf5 file; ``load()`` gives OfflineData.

    Accepts the config node or its fields as keyword arguments (which win over ``cfg``);
    other keyword arguments are ignored.
    """

    def __init__(self, cfg: Any = None, **kwargs: Any) -> None:
        self.cfg = SimpleNamespace(path=kwargs.get("path", getattr(cfg, "path", None)))

    def load(self) -> OfflineData:
        path = self._path()
        arrays, attrs = read_d4rl_file(path)
        try:
            return to_offline_data(arrays, attrs, dataset_id=path.stem, source=path)
        except ValueError as exc:
            raise DatasetCorruptError(
                f"D4RL file {path} is malformed ({one_line(exc)}); delete it and download it again"
            ) from exc

    def _path(self) -> Path:
        raw = self.cfg.path
        if not raw:
            raise DatasetError(
                "dataset.path is empty; D4RLFileSource reads the D4RL hdf5 "
                "file it names, e.g. dataset.path=~/d4rl/hopper-medium-v2.hdf5"
            )
        path = Path(str(raw)).expanduser()
        if path.is_dir():
            raise DatasetError(
                f"dataset.path {path} is a folder, not a D4RL hdf5 file; for a Minari "
                "dataset folder use dataset._target_=cql_runner.data.minari_source.MinariSource"
            )
        if not path.exists():
            raise DatasetNotFoundError(
                f"D4RL file {path} does not exist; set dataset.path to a downloaded D4RL "
                "hdf5 file (e.g. hopper-medium-v2.hdf5), or use a Minari dataset id instead"
            )
        return path


def read_d4rl_file(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The transition arrays and the scalar metadata of a D4RL file."""
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in REQUIRED_KEYS if k not in f]
            if missing:
                raise DatasetCorruptError(
                    f"D4RL file {path} lacks the keys {missing} (it has {sorted(f.keys())}); "
                    "it is not a D4RL dataset or is incomplete: download it again"
                )
            arrays = {k: f[k][()] for k in REQUIRED_KEYS + OPTIONAL_KEYS if k in f}
            attrs = _scalar_metadata(f)
    except DatasetError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise DatasetCorruptError(
            f"cannot read D4RL file {path} ({one_line(exc)}); delete it and download it again"
        ) from exc
    return arrays, attrs


def _scalar_metadata(f: h5py.File) -> dict[str, Any]:
    """File attributes plus small ``metadata/*`` datasets (D4RL stores policy weights there too)."""
    out: dict[str, Any] = {k: _plain(v) for k, v in f.attrs.items()}
    group = f.get("metadata")
    if isinstance(group, h5py.Group):
        for k, v in group.items():
            if isinstance(v, h5py.Dataset) and v.size <= 64:
                out.setdefault(k, _plain(v[()]))
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def to_offline_data(
    arrays: dict[str, np.ndarray], attrs: dict[str, Any], dataset_id: str, source: Path | None = None
) -> OfflineData:
    """Build transitions from D4RL arrays (see the module docstring for the conventions).

    Raises ValueError for arrays that do not fit together.
    """
    obs = np.asarray(arrays["observations"])
    n = obs.shape[0]
    obs = obs.reshape(n, -1)
    actions = np.asarray(arrays["actions"]).reshape(n, -1)
    rewards = np.asarray(arrays["rewards"]).reshape(n)
    terminals = np.asarray(arrays["terminals"]).reshape(n).astype(bool)
    if n == 0:
        raise ValueError("the file holds no transitions")
    has_next = "next_observations" in arrays
    if "timeouts" in arrays:
        timeouts = np.asarray(arrays["timeouts"]).reshape(n).astype(bool)
    elif has_next:
        warnings.warn(
            "D4RL file has no 'timeouts'; time-limit episode ends are unknown, so "
            "episode returns may run across episodes",
            stacklevel=2,
        )
        timeouts = np.zeros(n, bool)
    else:
        raise ValueError("without 'next_observations' the file needs 'timeouts' to tell where episodes end")

    if has_next:
        next_obs = np.asarray(arrays["next_observations"]).reshape(n, -1)
        keep = np.ones(n, bool)
    else:
        # The successor of a timeout row is the next episode's first observation: drop it.
        next_obs = np.concatenate([obs[1:], obs[-1:]])
        keep = terminals | ~timeouts
        keep[-1] = terminals[-1]
    if next_obs.shape != obs.shape:
        raise ValueError(f"next_observations {next_obs.shape} != observations {obs.shape}")

    ends = terminals | timeouts
    # A kept, unfinished row whose successor is gone is now the last row of its episode.
    cut = ~ends & ~np.append(keep[1:], False)
    timeouts = timeouts | cut
    if not keep.any():
        raise ValueError("no transition is left after dropping timeout rows")

    low, high, assumed = _action_bounds(attrs, actions.shape[1])
    if assumed and np.abs(actions).max() > 1.001:
        warnings.warn(
            f"D4RL actions reach {np.abs(actions).max():.3g}, outside the assumed "
            "[-1, 1]; they are clipped. Store action_low/action_high as file "
            "attributes to rescale instead",
            stacklevel=2,
        )
    terminals, timeouts = terminals[keep], timeouts[keep]
    new_ends = np.flatnonzero(terminals | timeouts)
    starts = np.concatenate([[0], new_ends[new_ends < keep.sum() - 1] + 1]).astype(np.int64)
    meta = DatasetMeta(
        dataset_id=dataset_id,
        ref_min_score=_optional_float(attrs.get("ref_min_score")),
        ref_max_score=_optional_float(attrs.get("ref_max_score")),
        action_low=low,
        action_high=high,
        extra={
            "source": "d4rl_file",
            "data_path": str(source.resolve()) if source is not None else None,
            "action_bounds_assumed": assumed,
            "next_observations_derived": not has_next,
            # Without timeouts an episode cut by the time limit runs on into the next one.
            "episode_ends_known": "timeouts" in arrays,
            "rows_in_file": int(n),
            "rows_dropped": int(n - keep.sum()),
            **({"algorithm_name": str(attrs["algorithm"])} if "algorithm" in attrs else {}),
        },
    )
    return OfflineData(
        observations=obs[keep].astype(np.float32),
        actions=to_unit_actions(actions[keep], low, high),
        rewards=rewards[keep].astype(np.float32),
        next_observations=next_obs[keep].astype(np.float32),
        terminals=terminals.astype(np.float32),
        timeouts=timeouts.astype(np.float32),
        episode_starts=starts,
        meta=meta,
    )


def _action_bounds(attrs: dict[str, Any], act_dim: int) -> tuple[np.ndarray, np.ndarray, bool]:
    if "action_low" in attrs and "action_high" in attrs:
        low = np.broadcast_to(np.asarray(attrs["action_low"], np.float32), (act_dim,)).copy()
        high = np.broadcast_to(np.asarray(attrs["action_high"], np.float32), (act_dim,)).copy()
        if not np.all(high > low):
            raise ValueError(f"action_high {high} is not above action_low {low}")
        return low, high, False
    return -np.ones(act_dim, np.float32), np.ones(act_dim, np.float32), True


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
