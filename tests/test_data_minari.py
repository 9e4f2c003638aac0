"""MinariSource on tiny datasets written with Minari's own API into a temp store."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import time
from pathlib import Path

import minari
import numpy as np
import pytest
from data_helpers import DICT_ENV_ID, DICT_OBS_SHAPES, make_minari_dataset
from omegaconf import OmegaConf

from cql_runner.config import DatasetConfig
from cql_runner.data.errors import (
    DatasetCacheWarning,
    DatasetCorruptError,
    DatasetError,
    DatasetNotFoundError,
)
from cql_runner.data.minari_source import MinariSource
from cql_runner.data.types import OfflineData

PENDULUM_ID = "test/pendulum/random-v0"
HOPPER_ID = "mujoco/hopper/medium-v0"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    # The per-user fallback cache must never be the real ~/.cache in tests.
    monkeypatch.setenv("CQL_RUNNER_CACHE_DIR", str(tmp_path / "user_cache"))
    return root


def load(**fields) -> OfflineData:
    return MinariSource(DatasetConfig(**fields)).load()


def make_pendulum() -> Path:
    """Episode 0 terminates, 1 is forced to truncate, 2-3 truncate at max_steps."""
    return make_minari_dataset(
        PENDULUM_ID,
        n_episodes=4,
        max_steps=50,
        ref_min_score=-1500.0,
        ref_max_score=-100.0,
        episode_ends=["terminated", "truncated", None, None],
    )


def assert_same(a: OfflineData, b: OfflineData) -> None:
    for f in dataclasses.fields(OfflineData):
        if f.name == "meta":
            continue
        x, y = getattr(a, f.name), getattr(b, f.name)
        assert x.dtype == y.dtype, f.name
        np.testing.assert_array_equal(x, y, err_msg=f.name)
    for f in dataclasses.fields(a.meta):
        x, y = getattr(a.meta, f.name), getattr(b.meta, f.name)
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)
        else:
            assert x == y, f.name


def forbid_episode_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_a, **_k):
        raise AssertionError("the slow path ran although the cache should have been used")

    monkeypatch.setattr(minari.MinariDataset, "iterate_episodes", boom)
    monkeypatch.setattr(minari.MinariDataset, "__init__", boom)


def count_episode_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = minari.MinariDataset.iterate_episodes

    def counting(self, *a, **k):
        calls.append(1)
        return real(self, *a, **k)

    monkeypatch.setattr(minari.MinariDataset, "iterate_episodes", counting)
    return calls


def cache_files(d: Path) -> list[Path]:
    return sorted(d.glob("*.npz"))


# ---------------------------------------------------------------- round trip


def test_round_trip_matches_raw_episodes(store: Path) -> None:
    make_pendulum()
    data = load(id=PENDULUM_ID)

    assert (data.size, data.obs_dim, data.act_dim) == (200, 3, 1)
    for name in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts"):
        assert getattr(data, name).dtype == np.float32, name
    assert data.episode_starts.dtype == np.int64
    np.testing.assert_array_equal(data.episode_starts, [0, 50, 100, 150])

    raw = minari.load_dataset(PENDULUM_ID)
    for i, start in enumerate(data.episode_starts):
        ep = raw[i]  # one by one: dataset[:] is broken in minari 0.5.4
        rows = slice(start, start + len(ep))
        np.testing.assert_array_equal(data.observations[rows], ep.observations[:-1].astype(np.float32))
        np.testing.assert_array_equal(data.next_observations[rows], ep.observations[1:].astype(np.float32))
        # Pendulum's actions live in [-2, 2]: the unit action is a / 2.
        np.testing.assert_allclose(data.actions[rows], ep.actions / 2.0, rtol=1e-6)
        np.testing.assert_allclose(data.rewards[rows], ep.rewards, rtol=1e-6)
    assert data.actions.min() >= -1 and data.actions.max() <= 1
    assert np.abs(data.actions).max() > 0.9  # rescaled, not clipped copies of ±2 actions


def test_next_obs_is_next_row_within_episodes(store: Path) -> None:
    make_pendulum()
    data = load(id=PENDULUM_ID)
    last = np.append(data.episode_starts[1:], data.size) - 1
    inner = np.setdiff1d(np.arange(data.size - 1), last)
    np.testing.assert_array_equal(data.next_observations[inner], data.observations[inner + 1])
    # Across a boundary the next row is a fresh reset, not the successor.
    assert not np.array_equal(data.next_observations[49], data.observations[50])


def test_terminals_and_timeouts_kept_apart(store: Path) -> None:
    make_pendulum()
    data = load(id=PENDULUM_ID)
    np.testing.assert_array_equal(np.flatnonzero(data.terminals), [49])
    np.testing.assert_array_equal(np.flatnonzero(data.timeouts), [99, 149, 199])
    assert not np.any(data.terminals * data.timeouts)


def test_meta_from_metadata(store: Path) -> None:
    make_pendulum()
    meta = load(id=PENDULUM_ID).meta
    assert meta.dataset_id == PENDULUM_ID
    assert meta.eval_env_id == "Pendulum-v1"
    assert json.loads(meta.eval_env_spec)["id"] == "Pendulum-v1"
    assert (meta.ref_min_score, meta.ref_max_score) == (-1500.0, -100.0)
    np.testing.assert_array_equal(meta.action_low, [-2.0])
    np.testing.assert_array_equal(meta.action_high, [2.0])
    assert meta.obs_keys is None
    assert meta.extra["total_episodes"] == 4
    assert meta.extra["algorithm_name"] == "random"
    assert meta.extra["author"] == ["cql-runner tests"]
    json.dumps(meta.extra)  # plain JSON, so the cached copy is identical


def test_missing_ref_scores_are_none(store: Path) -> None:
    make_minari_dataset(PENDULUM_ID, n_episodes=1, max_steps=5)
    meta = load(id=PENDULUM_ID).meta
    assert meta.ref_min_score is None and meta.ref_max_score is None


def test_hopper_shapes(store: Path) -> None:
    make_minari_dataset(HOPPER_ID, env_id="Hopper-v5", n_episodes=3, max_steps=30)
    data = load(id=HOPPER_ID)
    assert (data.obs_dim, data.act_dim) == (11, 3)
    assert data.meta.eval_env_id == "Hopper-v5"
    np.testing.assert_array_equal(data.meta.action_low, -np.ones(3))


def test_config_node_and_kwargs(store: Path) -> None:
    make_pendulum()
    node = OmegaConf.structured(DatasetConfig(id=PENDULUM_ID))
    a = MinariSource(node).load()
    # hydra.utils.instantiate passes the fields as keywords (plus anything else it is given).
    b = MinariSource(id=PENDULUM_ID, path=None, download=False, cache_dir=None, env=None).load()
    assert_same(a, b)


def test_hydra_instantiate(store: Path) -> None:
    from hydra.utils import instantiate

    make_pendulum()
    node = OmegaConf.structured(DatasetConfig(id=PENDULUM_ID))
    assert isinstance(instantiate(node), MinariSource)
    # Passing the node as cfg too: Hydra instantiates it recursively, the fields still win.
    source = instantiate(node, cfg=node)
    assert source.load().size == 200


# ---------------------------------------------------------------- path datasets


@pytest.mark.parametrize("sub", ["", "data"])
def test_load_from_path_outside_the_store(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sub: str
) -> None:
    src = make_pendulum()
    shipped = tmp_path / "shipped" / "pendulum"
    shutil.copytree(src, shipped)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "empty_store"))
    data = load(path=str(shipped / sub))
    assert data.size == 200 and data.meta.dataset_id == PENDULUM_ID
    # A path dataset (maybe read-only, maybe in site-packages) caches in the user dir.
    assert len(cache_files(tmp_path / "user_cache")) == 1
    assert not (shipped.parent / ".cql_runner_cache").exists()


def test_missing_path_is_not_found(store: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load(path=str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match=r"data/metadata\.json"):
        load(path=str(tmp_path / "empty"))


def test_hdf5_file_path_points_to_d4rl_source(store: Path, tmp_path: Path) -> None:
    f = tmp_path / "hopper-medium-v2.hdf5"
    f.write_bytes(b"x")
    with pytest.raises(DatasetError, match="D4RLFileSource"):
        load(path=str(f))


def test_neither_id_nor_path(store: Path) -> None:
    with pytest.raises(DatasetError, match="both empty"):
        load()


# ---------------------------------------------------------------- cache


def test_second_load_reads_the_cache(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_pendulum()
    first = load(id=PENDULUM_ID)
    assert len(cache_files(store / ".cql_runner_cache")) == 1
    forbid_episode_reads(monkeypatch)
    second = load(id=PENDULUM_ID)
    assert_same(first, second)


def test_touching_the_file_invalidates(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_pendulum()
    load(id=PENDULUM_ID)
    calls = count_episode_reads(monkeypatch)
    load(id=PENDULUM_ID)
    assert calls == []
    hdf5 = src / "data" / "main_data.hdf5"
    st = hdf5.stat()
    os.utime(hdf5, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    load(id=PENDULUM_ID)
    assert calls == [1]
    # The stale file is pruned, leaving one cache per dataset.
    assert len(cache_files(store / ".cql_runner_cache")) == 1


def test_rebuilt_dataset_is_reloaded(store: Path) -> None:
    make_pendulum()
    assert load(id=PENDULUM_ID).size == 200
    minari.delete_dataset(PENDULUM_ID)
    make_minari_dataset(PENDULUM_ID, n_episodes=2, max_steps=30, seed=7)
    data = load(id=PENDULUM_ID)
    assert data.size == 60
    np.testing.assert_array_equal(data.episode_starts, [0, 30])


def test_corrupt_cache_is_rebuilt(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_pendulum()
    first = load(id=PENDULUM_ID)
    (cached,) = cache_files(store / ".cql_runner_cache")
    cached.write_bytes(b"not a zip file at all")
    with pytest.warns(DatasetCacheWarning, match="unreadable"):
        again = load(id=PENDULUM_ID)
    assert_same(first, again)
    forbid_episode_reads(monkeypatch)
    assert_same(first, load(id=PENDULUM_ID))  # the rewritten cache is good


def test_truncated_cache_is_rebuilt(store: Path) -> None:
    make_pendulum()
    first = load(id=PENDULUM_ID)
    (cached,) = cache_files(store / ".cql_runner_cache")
    cached.write_bytes(cached.read_bytes()[: cached.stat().st_size // 2])
    with pytest.warns(DatasetCacheWarning):
        assert_same(first, load(id=PENDULUM_ID))


def test_unwritable_store_falls_back_to_user_cache(store: Path, tmp_path: Path) -> None:
    make_pendulum()
    # A file where the cache folder should go blocks it even for root (chmod would not).
    (store / ".cql_runner_cache").write_text("in the way")
    load(id=PENDULUM_ID)
    assert len(cache_files(tmp_path / "user_cache")) == 1


def test_no_writable_cache_warns_but_loads(store: Path, tmp_path: Path) -> None:
    make_pendulum()
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    with pytest.warns(DatasetCacheWarning, match="could not cache"):
        data = load(id=PENDULUM_ID, cache_dir=str(blocker / "cache"))
    assert data.size == 200


def test_explicit_cache_dir(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_pendulum()
    first = load(id=PENDULUM_ID, cache_dir=str(tmp_path / "mine"))
    assert len(cache_files(tmp_path / "mine")) == 1
    assert not (store / ".cql_runner_cache").exists()
    forbid_episode_reads(monkeypatch)
    assert_same(first, load(id=PENDULUM_ID, cache_dir=str(tmp_path / "mine")))


# ---------------------------------------------------------------- Dict observations


def test_dict_observations_flattened_in_documented_order(store: Path) -> None:
    make_minari_dataset("test/dict/random-v0", dict_obs=True, n_episodes=2, max_steps=10)
    data = load(id="test/dict/random-v0")
    keys = ["observation", "achieved_goal", "desired_goal", "alpha", "zeta"]
    assert data.meta.obs_keys == keys
    assert data.meta.eval_env_id == DICT_ENV_ID
    assert data.obs_dim == sum(DICT_OBS_SHAPES[k][0] for k in keys)

    raw = minari.load_dataset("test/dict/random-v0")
    for i, start in enumerate(data.episode_starts):
        ep = raw[i]
        rows = slice(start, start + len(ep))
        col = 0
        for k in keys:
            d = DICT_OBS_SHAPES[k][0]
            np.testing.assert_array_equal(
                data.observations[rows, col : col + d], ep.observations[k][:-1].astype(np.float32), err_msg=k
            )
            np.testing.assert_array_equal(
                data.next_observations[rows, col : col + d], ep.observations[k][1:].astype(np.float32), err_msg=k
            )
            col += d


def test_dict_observations_survive_the_cache(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_minari_dataset("test/dict/random-v0", dict_obs=True, n_episodes=2, max_steps=10)
    first = load(id="test/dict/random-v0")
    forbid_episode_reads(monkeypatch)
    assert_same(first, load(id="test/dict/random-v0"))


# ---------------------------------------------------------------- errors


def test_missing_dataset_names_the_fix(store: Path) -> None:
    t0 = time.monotonic()
    with pytest.raises(DatasetNotFoundError) as info:
        load(id=HOPPER_ID)
    assert time.monotonic() - t0 < 5
    msg = str(info.value)
    assert "\n" not in msg
    assert f"minari download {HOPPER_ID}" in msg
    assert f"cql-collect env=Hopper-v5 level=medium dataset_id={HOPPER_ID}" in msg
    assert str(store) in msg


def _hf_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make minari's Hugging Face remote unavailable, as on a machine without minari[hf]."""
    if importlib.util.find_spec("huggingface_hub") is None:
        return  # the real thing

    def no_hf():
        raise ImportError('huggingface_hub is not installed. Please install it using `pip install "minari[hf]"`')

    from minari.storage import remotes

    monkeypatch.setitem(remotes._registry, "hf", no_hf)


def test_download_without_hf_extra(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _hf_missing(monkeypatch)
    t0 = time.monotonic()
    with pytest.raises(DatasetError) as info:
        load(id=HOPPER_ID, download=True)
    assert time.monotonic() - t0 < 5
    msg = str(info.value)
    assert "\n" not in msg
    assert 'pip install "minari[hf]"' in msg


def test_download_unknown_remote_id(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def not_on_server(dataset_id: str, force_download: bool = False) -> None:
        raise ValueError(f"Couldn't find any version for dataset {dataset_id}")

    monkeypatch.setattr(minari, "download_dataset", not_on_server)
    with pytest.raises(DatasetNotFoundError, match="minari list remote"):
        load(id="mujoco/nothing/here-v0", download=True)


def test_download_then_load(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_download(dataset_id: str, force_download: bool = False) -> None:
        make_minari_dataset(dataset_id, n_episodes=1, max_steps=8)

    monkeypatch.setattr(minari, "download_dataset", fake_download)
    assert load(id=PENDULUM_ID, download=True).size == 8


def test_no_download_when_present(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_pendulum()

    def no_network(*_a, **_k):
        raise AssertionError("download attempted for a local dataset")

    monkeypatch.setattr(minari, "download_dataset", no_network)
    assert load(id=PENDULUM_ID, download=True).size == 200


@pytest.mark.parametrize("damage", ["garbage", "truncate"])
def test_corrupt_hdf5(store: Path, damage: str) -> None:
    src = make_pendulum()
    hdf5 = src / "data" / "main_data.hdf5"
    if damage == "garbage":
        hdf5.write_bytes(b"\x00garbage" * 100)
    else:
        hdf5.write_bytes(hdf5.read_bytes()[: hdf5.stat().st_size // 3])
    with pytest.raises(DatasetCorruptError) as info:
        load(id=PENDULUM_ID)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(src / "data") in msg and "delete" in msg


def test_corrupt_metadata(store: Path) -> None:
    src = make_pendulum()
    (src / "data" / "metadata.json").write_text("{not json")
    with pytest.raises(DatasetCorruptError, match="delete"):
        load(id=PENDULUM_ID)


def test_incomplete_dataset_dir(store: Path) -> None:
    src = make_pendulum()
    (src / "data" / "main_data.hdf5").unlink()
    with pytest.raises(DatasetCorruptError):
        load(id=PENDULUM_ID)


def test_discrete_actions_load_as_indices(store: Path) -> None:
    make_minari_dataset("test/cartpole/random-v0", env_id="CartPole-v1", n_episodes=2, max_steps=10)
    data = load(id="test/cartpole/random-v0")
    raw = minari.load_dataset("test/cartpole/random-v0")
    expected = np.concatenate([ep.actions for ep in raw.iterate_episodes()])
    assert data.actions.shape == (data.size, 1)
    np.testing.assert_array_equal(data.actions[:, 0], expected)
    assert data.meta.extra["n_actions"] == 2 and data.meta.action_low is None


@pytest.mark.parametrize("hint", [0, 1, 120, 199, 201, 1000])
def test_flatten_is_exact_when_the_step_count_hint_is_wrong(
    store: Path, monkeypatch: pytest.MonkeyPatch, hint: int
) -> None:
    """The flat arrays are preallocated from the metadata's step count; a wrong count only costs a copy."""
    from cql_runner.data import minari_source

    make_pendulum()
    expected = minari_source.flatten_dataset(minari.load_dataset(PENDULUM_ID))
    monkeypatch.setattr(minari_source, "_expected_steps", lambda _dataset: hint)
    data = minari_source.flatten_dataset(minari.load_dataset(PENDULUM_ID))
    for name in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts", "episode_starts"):
        got, want = getattr(data, name), getattr(expected, name)
        assert got.dtype == want.dtype and got.flags.c_contiguous, name
        np.testing.assert_array_equal(got, want, err_msg=name)
        assert got.base is None or name == "episode_starts", name  # trimmed by a copy, not a view
