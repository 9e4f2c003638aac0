"""On-disk cache of flattened datasets.

Flattening a Minari dataset walks it episode by episode (about 0.5 ms each, so seconds
for a D4RL-sized set, and every seed of a sweep pays it again). The flat float32 arrays
are therefore written once to an uncompressed ``.npz`` next to a JSON copy of the meta.

The file name carries a fingerprint of the source files (path, size and mtime of each)
and of :data:`CACHE_FORMAT_VERSION`, so editing, rebuilding or re-downloading a dataset,
or changing how we flatten, misses the old file instead of reading stale data. A cache
that cannot be read is reported with a :class:`DatasetCacheWarning` and rebuilt; a
cache that cannot be written is skipped. Neither ever fails a run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from cql_runner.data.errors import DatasetCacheWarning, one_line
from cql_runner.data.types import DatasetMeta, OfflineData

log = logging.getLogger(__name__)

# Bump whenever the flattening or the file layout changes: old caches then miss.
CACHE_FORMAT_VERSION = 1

_ARRAYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
_OPTIONAL_ARRAYS = ("action_low", "action_high")


def user_cache_dir() -> Path:
    """Per-user fallback: $CQL_RUNNER_CACHE_DIR, else $XDG_CACHE_HOME/cql_runner, else ~/.cache."""
    explicit = os.environ.get("CQL_RUNNER_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "cql_runner"


def fingerprint(source: Path) -> str:
    """Hash of the format version, the resolved path and (name, size, mtime) of each file."""
    source = source.resolve()
    files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
    h = hashlib.sha256(f"v{CACHE_FORMAT_VERSION}\0{source}".encode())
    for p in files:
        st = p.stat()
        h.update(f"\0{p.relative_to(source) if source.is_dir() else p.name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()


def to_jsonable(value: Any) -> Any:
    """Plain JSON types for meta.extra, so a cached load equals a fresh one."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(to_jsonable(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


@dataclasses.dataclass
class ArrayCache:
    """Where one dataset's flat arrays are cached.

    ``dirs`` are tried in order: the first file found is read, the first directory that
    accepts a write is written to.
    """

    dirs: list[Path]
    dataset_id: str
    source: Path

    def __post_init__(self) -> None:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", self.dataset_id).strip("_") or "dataset"
        where = hashlib.sha256(str(self.source.resolve()).encode()).hexdigest()[:8]
        # One stem per (dataset, location): older versions of it share the stem and are pruned.
        self._stem = f"{slug}-{where}"
        # Taken before the source is read, so a file changed mid-read cannot be cached
        # under its new fingerprint.
        self.key = fingerprint(self.source)

    def _name(self, key: str) -> str:
        return f"{self._stem}-{key[:16]}.npz"

    def load(self) -> OfflineData | None:
        key = self.key
        for d in self.dirs:
            path = d / self._name(key)
            if not path.is_file():
                continue
            try:
                data = read_npz(path, key)
            except Exception as exc:  # any unreadable cache is a miss, never an error
                warnings.warn(
                    f"ignoring unreadable dataset cache {path} ({one_line(exc)}); it will be rebuilt",
                    DatasetCacheWarning,
                    stacklevel=2,
                )
                continue
            if data is not None:
                log.info("loaded %s from cache %s", self.dataset_id, path)
                return data
        return None

    def save(self, data: OfflineData) -> Path | None:
        key = self.key
        errors = []
        for d in self.dirs:
            try:
                d.mkdir(parents=True, exist_ok=True)
                path = d / self._name(key)
                write_npz(path, data, key)
            except OSError as exc:
                errors.append(f"{d}: {one_line(exc)}")
                continue
            self._prune(d, keep=path)
            log.info("cached %s at %s", self.dataset_id, path)
            return path
        warnings.warn(
            f"could not cache dataset {self.dataset_id} ({'; '.join(errors)}); "
            "set dataset.cache_dir to a writable directory to load faster next time",
            DatasetCacheWarning,
            stacklevel=2,
        )
        return None

    def _prune(self, d: Path, keep: Path) -> None:
        # Caches of earlier versions of this dataset can never hit again.
        for old in d.glob(f"{self._stem}-*.npz"):
            if old != keep:
                with contextlib.suppress(OSError):
                    old.unlink()


def _meta_to_json(meta: DatasetMeta, key: str) -> str:
    fields = {f.name: getattr(meta, f.name) for f in dataclasses.fields(meta)}
    for name in _OPTIONAL_ARRAYS:
        fields.pop(name)
    fields = to_jsonable(fields)
    return json.dumps({"format_version": CACHE_FORMAT_VERSION, "key": key, "meta": fields})


def write_npz(path: Path, data: OfflineData, key: str) -> None:
    """Write atomically: a reader sees the old file or the complete new one, never half."""
    arrays: dict[str, np.ndarray] = {name: getattr(data, name) for name in _ARRAYS}
    arrays["episode_starts"] = data.episode_starts
    for name in _OPTIONAL_ARRAYS:
        value = getattr(data.meta, name)
        if value is not None:
            arrays[name] = np.asarray(value, dtype=np.float32)
    arrays["meta_json"] = np.array(_meta_to_json(data.meta, key))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            # A file object, not a name: np.savez would append ".npz" to the temp name.
            np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds like its flags
        # mkstemp makes the file private; a shared dataset store wants a shared cache.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_npz(path: Path, key: str) -> OfflineData | None:
    """The cached data, or None if the file belongs to another key or format version.

    Raises on a damaged file; the caller turns that into a warning.
    """
    # Our own handle: np.load leaks the one it opens when the zip directory is damaged.
    with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
        header = json.loads(str(z["meta_json"]))
        if header.get("format_version") != CACHE_FORMAT_VERSION or header.get("key") != key:
            return None
        arrays = {name: z[name] for name in _ARRAYS}
        starts = z["episode_starts"]
        bounds: dict[str, Any] = {name: z[name] if name in z.files else None for name in _OPTIONAL_ARRAYS}
    _check_consistent(arrays.values(), starts)
    meta = DatasetMeta(**header["meta"], **bounds)
    return OfflineData(**arrays, episode_starts=starts, meta=meta)


def _check_consistent(arrays: Iterable[np.ndarray], starts: np.ndarray) -> None:
    arrays = list(arrays)
    n = arrays[0].shape[0]
    if any(a.shape[0] != n or a.dtype != np.float32 for a in arrays):
        raise ValueError("cached arrays disagree in length or dtype")
    if starts.dtype != np.int64 or (starts.size and (starts[0] != 0 or starts[-1] >= n)):
        raise ValueError("cached episode_starts do not fit the arrays")
