"""Load a Minari dataset into flat float32 transitions (:class:`OfflineData`).

Two ways to name the data (``DatasetConfig``):

- ``path``: a Minari dataset folder (the one holding ``data/metadata.json`` and
  ``data/main_data.hdf5``), read in place; it need not be in the Minari store. This is how
  a dataset shipped inside the package is read.
- ``id``: a dataset in the local Minari store (``MINARI_DATASETS_PATH``, default
  ``~/.minari/datasets``). Nothing touches the network unless ``download`` is true.

Episodes are flattened so that row t is the transition (s_t, a_t, r_t, s_{t+1}):
Minari stores T+1 observations per episode of T steps, the last being the final one.
``terminals`` are Minari's ``terminations`` and ``timeouts`` its ``truncations``; they
are kept apart because a truncated step must still bootstrap. Actions are mapped to
[-1, 1] from the dataset's Box bounds, and Dict observations are concatenated in the
order of :func:`dict_obs_keys` (a Dict with Discrete entries, one-hot, or Text entries, dropped,
follows a :class:`DictLayout` that the discrete evaluator applies to its env too). Image
observations (Minari's Atari screens) are refused here: MinariAtariSource keeps them uint8.

The flat arrays are cached (see :mod:`cql_runner.data.cache`): by default in
``<MINARI_DATASETS_PATH>/.cql_runner_cache`` for store datasets (a hidden folder, which
Minari's listing skips) and in the per-user cache (``~/.cache/cql_runner``) for a
``path``, which may be read-only or inside a source tree. ``dataset.cache_dir`` overrides
both.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import gymnasium as gym
import minari
import numpy as np
from gymnasium.envs.registration import EnvSpec
from minari.storage.datasets_root_dir import get_dataset_path

from cql_runner.data.cache import ArrayCache, to_jsonable, user_cache_dir
from cql_runner.data.errors import (
    DatasetCorruptError,
    DatasetError,
    DatasetNotFoundError,
    one_line,
)
from cql_runner.data.memory import release_freed_memory
from cql_runner.data.spaces import DictLayout, dict_obs_keys, flatten_entries, flatten_obs, to_unit_actions
from cql_runner.data.types import DatasetMeta, OfflineData

log = logging.getLogger(__name__)

_CONFIG_FIELDS = ("id", "path", "download", "cache_dir")
# Errors minari and h5py raise on unreadable files (json, h5py and minari's own asserts).
_READ_ERRORS = (OSError, ValueError, KeyError, TypeError, AssertionError, EOFError)
# Gymnasium ids of Minari's mujoco/<env>/... namespaces, for the cql-collect hint.
_MUJOCO_ENVS = {
    "ant": "Ant-v5",
    "halfcheetah": "HalfCheetah-v5",
    "hopper": "Hopper-v5",
    "humanoid": "Humanoid-v5",
    "humanoidstandup": "HumanoidStandup-v5",
    "invertedpendulum": "InvertedPendulum-v5",
    "inverteddoublependulum": "InvertedDoublePendulum-v5",
    "pusher": "Pusher-v5",
    "reacher": "Reacher-v5",
    "swimmer": "Swimmer-v5",
    "walker2d": "Walker2d-v5",
}
# Gymnasium ids (and the cql-collect arguments they need) of cql-collect's own cql_runner/<name>/ sets.
_COLLECT_ENVS = {
    "cartpole": "CartPole-v1",
    "acrobot": "Acrobot-v1",
    "pendulum": "Pendulum-v1",
    "minatar-breakout": "MinAtar/Breakout-v1 max_episode_steps=2000",
    "minatar-space_invaders": "MinAtar/SpaceInvaders-v1 max_episode_steps=2000",
}
_METADATA_EXTRAS = (
    "total_episodes",
    "total_steps",
    "algorithm_name",
    "author",
    "author_email",
    "code_permalink",
    "description",
    "minari_version",
    "data_format",
    "dataset_size",
    "num_episodes_average_score",
    "requirements",
)


class MinariSource:
    """A dataset source for ``cfg.dataset``; ``load()`` returns the flat transitions.

    Accepts the config node (``MinariSource(cfg)``) or its fields as keyword arguments,
    as ``hydra.utils.instantiate(cfg.dataset)`` passes them; keyword fields win over
    ``cfg``, and other keyword arguments are ignored.
    """

    def __init__(self, cfg: Any = None, **kwargs: Any) -> None:
        self.cfg = SimpleNamespace(**{k: kwargs[k] if k in kwargs else getattr(cfg, k, None) for k in _CONFIG_FIELDS})

    def load(self) -> OfflineData:
        data_dir, dataset_id, fix = self.locate()
        cache = ArrayCache(self._cache_dirs(), dataset_id, data_dir)
        cached = cache.load()
        if cached is not None:
            return cached
        start = time.perf_counter()
        data = read_minari_dir(data_dir, fix)
        log.info(
            "flattened %s: %d transitions, %d episodes in %.1f s",
            dataset_id,
            data.size,
            len(data.episode_starts),
            time.perf_counter() - start,
        )
        cache.save(data)
        # The hdf5 read leaves tens of MB freed but resident (see cql_runner.data.memory).
        release_freed_memory()
        return data

    def locate(self) -> tuple[Path, str, str]:
        """(the dataset's data/ folder, a name for it, the fix to suggest if it is corrupt)."""
        path = self.cfg.path
        if path:
            data_dir = _data_dir_from_path(Path(str(path)).expanduser())
            fix = f"delete {data_dir.parent} and rebuild it, or reinstall cql-runner if the dataset shipped with it"
            return data_dir, data_dir.parent.name, fix
        dataset_id = self.cfg.id
        if not dataset_id:
            raise DatasetError(
                "dataset.id and dataset.path are both empty; pick a task with "
                "env=<name>, or set dataset.id or dataset.path"
            )
        dataset_id = str(dataset_id)
        root = get_dataset_path()
        data_dir = root / dataset_id / "data"
        if not data_dir.exists():
            if not self.cfg.download:
                raise DatasetNotFoundError(not_found_message(dataset_id, root))
            _download(dataset_id, root)
        fix = (
            f"delete {root / dataset_id} and rebuild it with '{collect_command(dataset_id)}' "
            f"or re-download it with 'minari download {dataset_id}'"
        )
        return data_dir, dataset_id, fix

    def _cache_dirs(self) -> list[Path]:
        explicit = self.cfg.cache_dir
        if explicit:
            return [Path(str(explicit)).expanduser()]
        if self.cfg.path:
            return [user_cache_dir()]
        return [get_dataset_path() / ".cql_runner_cache", user_cache_dir()]


def collect_command(dataset_id: str) -> str:
    """The cql-collect call that builds ``dataset_id`` locally (best guess at the env id)."""
    parts = dataset_id.split("/")
    level = parts[-1].rsplit("-v", 1)[0]
    env = "<gymnasium-env-id>"
    if len(parts) == 3 and parts[0] == "mujoco":
        env = _MUJOCO_ENVS.get(parts[1].lower(), env)
    if len(parts) == 3 and parts[0] == "cql_runner":
        env = _COLLECT_ENVS.get(parts[1].lower(), env)
    return f"cql-collect env={env} level={level} dataset_id={dataset_id}"


def not_found_message(dataset_id: str, root: Path) -> str:
    return (
        f"dataset '{dataset_id}' is not in {root} (MINARI_DATASETS_PATH); on a networked "
        f"machine run 'minari download {dataset_id}', or build it locally with "
        f"'{collect_command(dataset_id)}'"
    )


def _download(dataset_id: str, root: Path) -> None:
    try:
        minari.download_dataset(dataset_id)
    except ImportError as exc:
        raise DatasetError(
            f"dataset '{dataset_id}' is not in {root} and downloading it needs the Hugging Face "
            f"extra: pip install \"minari[hf]\" (or run 'minari download {dataset_id}' on a "
            f"networked machine and copy the dataset into {root})"
        ) from exc
    except ValueError as exc:  # minari's answer for an id the server does not have
        raise DatasetNotFoundError(
            f"dataset '{dataset_id}' is neither in {root} nor downloadable ({one_line(exc)}); "
            f"check the id with 'minari list remote', or build it locally with "
            f"'{collect_command(dataset_id)}'"
        ) from exc
    except Exception as exc:
        raise DatasetError(
            f"downloading dataset '{dataset_id}' failed ({one_line(exc)}); check the network, "
            f"or run 'minari download {dataset_id}' elsewhere and copy it into {root}"
        ) from exc


def _data_dir_from_path(path: Path) -> Path:
    """Accept the dataset folder or its data/ subfolder."""
    if (path / "data" / "metadata.json").is_file():
        return path / "data"
    if (path / "metadata.json").is_file():
        return path
    if path.is_file() and path.suffix in (".hdf5", ".h5"):
        raise DatasetError(
            f"dataset.path {path} is a single hdf5 file, not a Minari dataset folder; for a "
            "D4RL file set dataset._target_=cql_runner.data.d4rl_file.D4RLFileSource"
        )
    if not path.exists():
        raise DatasetNotFoundError(
            f"dataset.path {path} does not exist; point it at a Minari dataset folder "
            "(the one that contains data/metadata.json)"
        )
    raise DatasetNotFoundError(
        f"no Minari dataset at {path} (no data/metadata.json); point dataset.path at the folder that contains data/"
    )


def read_minari_dir(data_dir: Path, fix: str) -> OfflineData:
    """Open and flatten the Minari dataset in ``data_dir``; ``fix`` ends a corrupt-data error."""
    try:
        dataset = minari.MinariDataset(data_dir)
        return flatten_dataset(dataset, data_dir)
    except DatasetError:
        raise
    except _READ_ERRORS as exc:
        raise DatasetCorruptError(f"cannot read the Minari dataset at {data_dir} ({one_line(exc)}); {fix}") from exc


def flatten_dataset(dataset: minari.MinariDataset, data_dir: Path | None = None) -> OfflineData:
    """Concatenate every episode into float32 transition arrays.

    Each episode is copied straight into flat arrays preallocated from the dataset's step
    count. Collecting the episodes and concatenating them at the end held the data twice at
    the peak, and the freed per-episode pieces (small blocks that glibc keeps on its heap)
    stayed resident: a first load left the process at about 2x the dataset's size, against
    1.05x for a load from the cache (scripts/bench_memory.py).
    """
    keys, layout = _obs_layout(dataset.observation_space)
    # Discrete actions are kept as their indices (a float32 column); Box actions go to [-1, 1].
    n_actions = discrete_action_count(dataset.action_space)
    if layout is not None:
        if n_actions is None:
            raise DatasetError(
                f"dataset '{dataset.id}' has Discrete or Text observation entries and continuous actions; "
                "only discrete-action datasets (MiniGrid's) may have them"
            )
        _note_dropped_entries(dataset, layout)
    low, high = _action_bounds(dataset.action_space) if n_actions is None else (None, None)
    cols = _FlatColumns(_expected_steps(dataset))
    lengths: list[int] = []
    for ep in dataset.iterate_episodes():
        n = len(ep.rewards)
        if n == 0:
            continue
        obs = _episode_obs(ep.observations, keys, ep.id, layout)
        if obs.shape[0] != n + 1:
            raise DatasetCorruptError(
                f"episode {ep.id} has {obs.shape[0]} observations for {n} steps "
                "(expected one more); rebuild the dataset"
            )
        cols.append(
            n,
            obs=obs[:-1],
            next_obs=obs[1:],
            actions=(
                # Box actions (n_actions is None) always have their bounds.
                to_unit_actions(np.asarray(ep.actions).reshape(n, -1), cast(np.ndarray, low), cast(np.ndarray, high))
                if n_actions is None
                else np.asarray(ep.actions, dtype=np.float32).reshape(n, 1)
            ),
            rewards=np.asarray(ep.rewards, dtype=np.float32).reshape(n),
            terminals=np.asarray(ep.terminations, dtype=np.float32).reshape(n),
            timeouts=np.asarray(ep.truncations, dtype=np.float32).reshape(n),
        )
        lengths.append(n)
    if not lengths:
        raise DatasetError(f"dataset '{dataset.id}' has no transitions; rebuild it with at least one non-empty episode")
    flat = cols.finish()
    starts = np.concatenate([[0], np.cumsum(lengths[:-1])]).astype(np.int64)
    return OfflineData(
        observations=flat["obs"],
        actions=flat["actions"],
        rewards=flat["rewards"],
        next_observations=flat["next_obs"],
        terminals=flat["terminals"],
        timeouts=flat["timeouts"],
        episode_starts=starts,
        meta=build_meta(dataset, keys, low, high, data_dir, n_actions, layout),
    )


def _expected_steps(dataset: minari.MinariDataset) -> int:
    """The step count the episode metadata claims (0 when unreadable): a sizing hint only."""
    try:
        steps = int(dataset.total_steps)
    except _READ_ERRORS:
        return 0
    return steps if 0 <= steps <= 10**10 else 0


class _FlatColumns:
    """Float32 columns filled in place, episode by episode.

    Sized from a hint; a dataset longer than the hint grows them (a copy), one shorter is
    trimmed at the end (a copy). Both happen only when the metadata disagrees with the data.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.size = 0
        self.arrays: dict[str, np.ndarray] = {}

    def append(self, n: int, **parts: np.ndarray) -> None:
        end = self.size + n
        if not self.arrays:
            rows = max(self.capacity, end)
            self.arrays = {k: np.empty((rows, *v.shape[1:]), np.float32) for k, v in parts.items()}
        elif end > self.capacity:
            rows = max(end, 2 * self.capacity)
            grown = {}
            for k, a in self.arrays.items():
                grown[k] = np.empty((rows, *a.shape[1:]), np.float32)
                grown[k][: self.size] = a[: self.size]
            self.arrays = grown
        self.capacity = len(next(iter(self.arrays.values())))
        for k, v in parts.items():
            out = self.arrays[k]
            # Assignment would broadcast a (n, 1) part into (n, d); concatenation refused it.
            if v.shape[1:] != out.shape[1:]:
                raise ValueError(f"{k} of shape {v.shape[1:]} in one episode and {out.shape[1:]} in another")
            out[self.size : end] = v
        self.size = end

    def finish(self) -> dict[str, np.ndarray]:
        return {k: a if len(a) == self.size else a[: self.size].copy() for k, a in self.arrays.items()}


def _obs_layout(space: gym.Space) -> tuple[list[str] | None, DictLayout | None]:
    """(flattening order, None) for a Box or Dict-of-Box; (None, layout) for a Dict that also has
    Discrete or Text entries (MiniGrid's); anything else is rejected."""
    if isinstance(space, gym.spaces.Box):
        if is_image_space(space):
            raise DatasetError(
                f"observation space {space} holds images, which this loader would turn into float32 "
                "vectors; for Minari's Atari sets use env=atari-<game>-expert (or "
                "dataset._target_=cql_runner.discrete.minari_frames.MinariAtariSource)"
            )
        return None, None
    if isinstance(space, gym.spaces.Dict):
        entries = space.spaces
        bad = [
            k for k, s in entries.items() if not isinstance(s, gym.spaces.Box | gym.spaces.Discrete | gym.spaces.Text)
        ]
        if bad:
            raise DatasetError(
                f"observation entries {bad} are not Box, Discrete or Text spaces; only those can be flattened for CQL"
            )
        keys = dict_obs_keys(list(entries.keys()))
        if all(isinstance(s, gym.spaces.Box) for s in entries.values()):
            return keys, None
        one_hot = {}
        for k, s in entries.items():
            if isinstance(s, gym.spaces.Discrete):
                if int(s.start) != 0:
                    raise DatasetError(
                        f"observation entry {k!r} is {s}; only Discrete spaces starting at 0 are supported"
                    )
                one_hot[k] = int(s.n)
        dropped = tuple(k for k in keys if isinstance(entries[k], gym.spaces.Text))
        return None, DictLayout(tuple(k for k in keys if k not in dropped), one_hot, dropped)
    raise DatasetError(f"observation space {space} is not supported; CQL here needs Box or Dict-of-Box observations")


def is_image_space(space: gym.Space) -> bool:
    """A Box of uint8 pixels (H, W) or (H, W, C) with H, W ≥ 32: a camera or screen image."""
    shape = tuple(getattr(space, "shape", None) or ())
    return (
        isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(shape) in (2, 3) and min(shape[:2]) >= 32
    )


def _note_dropped_entries(dataset: minari.MinariDataset, layout: DictLayout) -> None:
    """Log the text entries left out, with the values the first episode holds (a task's mission
    is constant, so it carries no information the policy could use)."""
    if not layout.dropped:
        return
    first = next(iter(dataset.iterate_episodes()), None)
    seen = {k: sorted({str(v) for v in first.observations[k]}) for k in layout.dropped} if first is not None else {}
    log.info(
        "dropping the text observation entries %s (constant per task; first episode: %s); "
        "flattening %s in that order (Discrete entries one-hot: %s)",
        list(layout.dropped),
        seen,
        list(layout.keys),
        layout.one_hot,
    )


def discrete_action_count(space: gym.Space) -> int | None:
    """|A| of a Discrete action space (starting at 0), None for anything else."""
    if isinstance(space, gym.spaces.Discrete):
        if int(space.start) != 0:
            raise DatasetError(
                f"action space {space} starts at {space.start}; only Discrete spaces starting at 0 are supported"
            )
        return int(space.n)
    return None


def _action_bounds(space: gym.Space) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(space, gym.spaces.Box):
        raise DatasetError(
            f"action space {space} is not a Box; CQL (SAC-based) needs "
            "continuous actions, so pick a dataset of a continuous-control task"
        )
    low = np.asarray(space.low, dtype=np.float32).reshape(-1)
    high = np.asarray(space.high, dtype=np.float32).reshape(-1)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(high > low)):
        raise DatasetError(
            f"action space {space} has unbounded or empty bounds, so actions cannot be mapped to [-1, 1]"
        )
    return low, high


def _episode_obs(obs: Any, keys: list[str] | None, episode: int, layout: DictLayout | None = None) -> np.ndarray:
    if layout is not None:
        if not isinstance(obs, dict) or not set(layout.keys) <= set(obs):
            raise DatasetCorruptError(
                f"episode {episode} observations do not hold the Dict entries {list(layout.keys)}; rebuild the dataset"
            )
        return flatten_entries(obs, layout, batch_dims=1)
    if keys is None:
        arr = np.asarray(obs)
        return arr.reshape(arr.shape[0], -1).astype(np.float32)
    if not isinstance(obs, dict) or set(obs) != set(keys):
        raise DatasetCorruptError(
            f"episode {episode} observations do not match the Dict space keys {keys}; rebuild the dataset"
        )
    # Per-step scalars are stored as (T+1,); make every entry (T+1, d) before concatenating.
    entries = {k: np.asarray(obs[k]).reshape(len(obs[k]), -1) for k in keys}
    return flatten_obs(entries, keys)


def _spec_json(raw: str | None) -> tuple[str | None, str | None]:
    """(env id, spec JSON) from a stored EnvSpec, without constructing the env.

    Keys the installed gymnasium's EnvSpec does not take (older datasets store
    ``apply_api_compatibility`` and the like) are dropped, so ``EnvSpec(**json.loads(s))``
    and ``gym.make`` accept the result.
    """
    if not raw:
        return None, None
    try:
        spec = json.loads(raw)
    except ValueError:
        return None, None
    accepted = {f.name for f in dataclasses.fields(EnvSpec) if f.init}
    spec = {k: v for k, v in spec.items() if k in accepted}
    return spec.get("id"), json.dumps(spec)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def build_meta(
    dataset: minari.MinariDataset,
    keys: list[str] | None,
    low: np.ndarray | None,
    high: np.ndarray | None,
    data_dir: Path | None = None,
    n_actions: int | None = None,
    layout: DictLayout | None = None,
) -> DatasetMeta:
    """Meta from the dataset's metadata.json (reference scores as stored, not recomputed)."""
    md = dataset.storage.metadata
    collect_id, _ = _spec_json(md.get("env_spec"))
    eval_id, eval_spec = _spec_json(md.get("eval_env_spec") or md.get("env_spec"))
    extra: dict[str, Any] = {"source": "minari", "collect_env_id": collect_id}
    extra.update({k: md[k] for k in _METADATA_EXTRAS if md.get(k) is not None})
    if data_dir is not None:
        extra["data_path"] = str(data_dir.resolve())
    if n_actions is not None:
        extra["n_actions"] = int(n_actions)
    if layout is not None:
        extra["obs_layout"] = layout.to_json()
    return DatasetMeta(
        dataset_id=str(md.get("dataset_id", dataset.id)),
        eval_env_id=eval_id,
        eval_env_spec=eval_spec,
        ref_min_score=_optional_float(md.get("ref_min_score")),
        ref_max_score=_optional_float(md.get("ref_max_score")),
        action_low=low,
        action_high=high,
        obs_keys=keys,
        extra=to_jsonable(extra),
    )
