"""D4RLFileSource on small synthetic D4RL-style hdf5 files."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from data_helpers import make_d4rl_file

from cql_runner.config import DatasetConfig
from cql_runner.data.d4rl_file import D4RLFileSource
from cql_runner.data.errors import DatasetCorruptError, DatasetError, DatasetNotFoundError
from cql_runner.data.types import OfflineData

# Episodes of 5, 7 and 4 steps: the first terminates, the second times out, the third is
# cut by the end of the file. Rows 0-4, 5-11 and 12-15; obs[:, 0] = 100 * episode + step.


def load(path: Path) -> OfflineData:
    return D4RLFileSource(DatasetConfig(path=str(path))).load()


def test_with_next_observations_round_trip(tmp_path: Path) -> None:
    f = tmp_path / "hopper-medium-v2.hdf5"
    raw = make_d4rl_file(f, with_next_observations=True)
    data = load(f)
    assert data.size == 16
    for name in ("observations", "actions", "rewards", "next_observations"):
        assert getattr(data, name).dtype == np.float32
        np.testing.assert_array_equal(getattr(data, name), raw[name].astype(np.float32))
    np.testing.assert_array_equal(np.flatnonzero(data.terminals), [4])
    # Row 15 ends the file mid-episode: recorded as a truncation.
    np.testing.assert_array_equal(np.flatnonzero(data.timeouts), [11, 15])
    np.testing.assert_array_equal(data.episode_starts, [0, 5, 12])
    assert data.episode_starts.dtype == np.int64
    assert data.meta.dataset_id == "hopper-medium-v2"
    assert data.meta.eval_env_id is None
    assert data.meta.extra["next_observations_derived"] is False
    assert data.meta.extra["rows_dropped"] == 0


def test_derived_next_observations_follow_qlearning_dataset(tmp_path: Path) -> None:
    f = tmp_path / "walker2d-medium-v0.hdf5"
    raw = make_d4rl_file(f, with_next_observations=False)
    data = load(f)
    # Dropped: row 11 (a timeout, whose successor starts episode 2) and row 15 (last row).
    kept = np.r_[0:11, 12:15]
    assert data.size == len(kept)
    np.testing.assert_array_equal(data.observations, raw["observations"][kept])
    np.testing.assert_array_equal(data.actions, raw["actions"][kept])
    np.testing.assert_array_equal(data.rewards, raw["rewards"][kept])
    np.testing.assert_array_equal(data.next_observations, raw["observations"][kept + 1])
    # Every bootstrapped transition stays inside its episode: step k -> step k + 1.
    live = data.terminals == 0
    np.testing.assert_array_equal(data.next_observations[live, 0], data.observations[live, 0] + 1)
    np.testing.assert_array_equal(np.flatnonzero(data.terminals), [4])
    # The rows before the dropped ones now end their episodes as truncations.
    np.testing.assert_array_equal(np.flatnonzero(data.timeouts), [10, 13])
    np.testing.assert_array_equal(data.episode_starts, [0, 5, 11])
    assert data.meta.extra["next_observations_derived"] is True
    assert data.meta.extra["rows_dropped"] == 2


def test_terminal_last_row_is_kept(tmp_path: Path) -> None:
    f = tmp_path / "d.hdf5"
    make_d4rl_file(f, episode_lengths=(3, 2), episode_ends=("timeout", "terminal"))
    data = load(f)
    np.testing.assert_array_equal(data.observations[:, 0], [0, 1, 100, 101])
    np.testing.assert_array_equal(data.terminals, [0, 0, 0, 1])
    np.testing.assert_array_equal(data.timeouts, [0, 1, 0, 0])
    np.testing.assert_array_equal(data.episode_starts, [0, 2])


def test_terminal_and_timeout_on_one_row(tmp_path: Path) -> None:
    f = tmp_path / "d.hdf5"
    make_d4rl_file(f, episode_lengths=(3, 3), episode_ends=("terminal", "terminal"))
    with h5py.File(f, "a") as h:
        h["timeouts"][2] = True
    data = load(f)
    assert data.size == 6
    assert data.terminals[2] == 1 and data.timeouts[2] == 1


def test_episode_returns_use_boundaries(tmp_path: Path) -> None:
    f = tmp_path / "d.hdf5"
    raw = make_d4rl_file(f, with_next_observations=True)
    returns = load(f).episode_returns()
    expected = [raw["rewards"][a:b].sum() for a, b in ((0, 5), (5, 12), (12, 16))]
    np.testing.assert_allclose(returns, expected, rtol=1e-5)


def test_actions_assumed_unit_unless_bounds_given(tmp_path: Path) -> None:
    f = tmp_path / "d.hdf5"
    raw = make_d4rl_file(f, with_next_observations=True)
    data = load(f)
    assert data.meta.extra["action_bounds_assumed"] is True
    np.testing.assert_array_equal(data.meta.action_low, [-1, -1])
    np.testing.assert_array_equal(data.meta.action_high, [1, 1])
    with h5py.File(f, "a") as h:
        h["actions"][...] = raw["actions"] * 3.0
        h.attrs["action_low"] = -3.0
        h.attrs["action_high"] = 3.0
        h.attrs["ref_min_score"] = -20.0
        h.attrs["ref_max_score"] = 3234.3
    data = load(f)
    assert data.meta.extra["action_bounds_assumed"] is False
    np.testing.assert_allclose(data.actions, raw["actions"], atol=1e-6)
    np.testing.assert_array_equal(data.meta.action_high, [3, 3])
    assert (data.meta.ref_min_score, data.meta.ref_max_score) == (-20.0, pytest.approx(3234.3))


def test_missing_key_is_corrupt(tmp_path: Path) -> None:
    f = tmp_path / "d.hdf5"
    make_d4rl_file(f)
    with h5py.File(f, "a") as h:
        del h["rewards"]
    with pytest.raises(DatasetCorruptError) as info:
        load(f)
    msg = str(info.value)
    assert "\n" not in msg and "['rewards']" in msg and "download it again" in msg


def test_no_timeouts_and_no_next_observations_is_corrupt(tmp_path: Path) -> None:
    f = tmp_path / "d.hdf5"
    make_d4rl_file(f)
    with h5py.File(f, "a") as h:
        del h["timeouts"]
    with pytest.raises(DatasetCorruptError, match="timeouts"):
        load(f)


def test_no_timeouts_with_next_observations_warns(tmp_path: Path) -> None:
    f = tmp_path / "d.hdf5"
    make_d4rl_file(f, with_next_observations=True)
    with h5py.File(f, "a") as h:
        del h["timeouts"]
    with pytest.warns(UserWarning, match="timeouts"):
        data = load(f)
    assert data.size == 16


def test_mismatched_lengths_are_corrupt(tmp_path: Path) -> None:
    f = tmp_path / "d.hdf5"
    make_d4rl_file(f)
    with h5py.File(f, "a") as h:
        del h["actions"]
        h["actions"] = np.zeros((3, 2), np.float32)
    with pytest.raises(DatasetCorruptError, match="malformed"):
        load(f)


def test_garbage_file_is_corrupt(tmp_path: Path) -> None:
    f = tmp_path / "d.hdf5"
    f.write_bytes(b"\x89HDF garbage" * 50)
    with pytest.raises(DatasetCorruptError) as info:
        load(f)
    assert "\n" not in str(info.value) and str(f) in str(info.value)


def test_missing_file_and_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load(tmp_path / "missing.hdf5")
    with pytest.raises(DatasetError, match="MinariSource"):
        load(tmp_path)
    with pytest.raises(DatasetError, match="empty"):
        D4RLFileSource(DatasetConfig()).load()


def test_kwargs_construction(tmp_path: Path) -> None:
    f = tmp_path / "d.hdf5"
    make_d4rl_file(f, with_next_observations=True)
    data = D4RLFileSource(path=str(f), id=None, download=False, cache_dir=None).load()
    assert data.size == 16
