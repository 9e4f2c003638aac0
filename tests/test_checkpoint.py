"""Checkpoints: round trip, rotation, and that damage is always detected, never loaded."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from cql_runner import checkpoint as ckpt
from cql_runner.checkpoint import (
    CheckpointError,
    checkpoint_step,
    load_checkpoint,
    load_latest,
    save_checkpoint,
)


def make_state(step: int = 0) -> dict:
    gen = torch.Generator().manual_seed(123)
    torch.rand(3, generator=gen)  # move it off its seed so the state is non-trivial
    np_rng = np.random.default_rng(7)
    np_rng.random(5)
    return {
        "step": step,
        "lr": 3e-4,
        "actor": {"w": torch.randn(64, 32), "b": torch.zeros(32)},
        "critic": {"layers": {"0": {"w": torch.randn(100, 100)}}},
        "obs_mean": np.arange(11, dtype=np.float32),
        "rng": {
            "torch": torch.get_rng_state(),
            "generator": gen.get_state(),
            "numpy": np_rng.bit_generator.state,
        },
    }


def assert_same(a: object, b: object) -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


def tmp_files(d: Path) -> list[Path]:
    return [p for p in d.iterdir() if p.name not in ("last.pt", "prev.pt")]


def test_round_trip_restores_tensors_and_rng_states(tmp_path: Path) -> None:
    state = make_state(step=1000)
    path = save_checkpoint(tmp_path / "ckpt", state, step=1000)
    assert path == tmp_path / "ckpt" / "last.pt"
    loaded = load_checkpoint(path)
    assert_same(state, loaded)
    assert checkpoint_step(path) == 1000

    # The restored RNG states continue the same streams.
    gen = torch.Generator()
    gen.set_state(loaded["rng"]["generator"])
    ref = torch.Generator()
    ref.set_state(state["rng"]["generator"])
    assert torch.equal(torch.rand(4, generator=gen), torch.rand(4, generator=ref))
    np_rng = np.random.default_rng()
    np_rng.bit_generator.state = loaded["rng"]["numpy"]
    np_ref = np.random.default_rng(7)
    np_ref.random(5)
    assert np_rng.random() == np_ref.random()


def test_rotation_keeps_last_two_and_no_tmp_files(tmp_path: Path) -> None:
    d = tmp_path / "ckpt"
    for step in (1, 2, 3):
        save_checkpoint(d, make_state(step), step=step)
    assert checkpoint_step(d / "last.pt") == 3
    assert checkpoint_step(d / "prev.pt") == 2
    assert tmp_files(d) == []
    state, path = load_latest(d)
    assert path.name == "last.pt" and state["step"] == 3


def test_failed_write_leaves_no_tmp_and_keeps_last(tmp_path: Path, monkeypatch) -> None:
    d = tmp_path / "ckpt"
    save_checkpoint(d, make_state(1), step=1)
    real_save = torch.save

    def failing_save(obj, f, *a, **kw):
        if isinstance(obj, dict) and "payload" in obj:  # the envelope write to disk
            f.write(b"partial")
            raise OSError("disk full")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(ckpt.torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(d, make_state(2), step=2)
    assert tmp_files(d) == []
    assert checkpoint_step(d / "last.pt") == 1


def test_stale_tmp_from_a_killed_writer_is_cleaned(tmp_path: Path) -> None:
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / ".ckpt-abc.tmp").write_bytes(b"half a checkpoint")
    save_checkpoint(d, make_state(1), step=1)
    assert tmp_files(d) == []


def test_truncated_last_falls_back_to_prev(tmp_path: Path, caplog) -> None:
    d = tmp_path / "ckpt"
    save_checkpoint(d, make_state(1), step=1)
    save_checkpoint(d, make_state(2), step=2)
    last = d / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])

    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(last)
    with caplog.at_level(logging.WARNING, logger="cql_runner"):
        state, path = load_latest(d)
    assert path == d / "prev.pt" and state["step"] == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any("last.pt is corrupt" in m and "falling back to" in m and "at step 1" in m for m in messages), messages
    # The corrupt file is left alone for the user to inspect.
    assert last.read_bytes() == data[: len(data) // 2]


@pytest.mark.parametrize("cut", [1, 100, -1])
def test_truncation_anywhere_is_detected(tmp_path: Path, cut: int) -> None:
    path = save_checkpoint(tmp_path, make_state(), step=0)
    data = path.read_bytes()
    path.write_bytes(data[:cut])
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_flipped_byte_in_the_middle_is_detected(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, make_state(), step=5)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_no_single_flip_loads_wrong_data(tmp_path: Path) -> None:
    # Every flipped byte must either be caught or land where it changes nothing
    # (zip padding); it must never return different data.
    state = {"w": torch.arange(2000, dtype=torch.float32), "n": np.arange(50)}
    path = save_checkpoint(tmp_path, state, step=9)
    original = path.read_bytes()
    positions = range(0, len(original), max(1, len(original) // 150))
    for pos in positions:
        data = bytearray(original)
        data[pos] ^= 0x10
        path.write_bytes(bytes(data))
        try:
            loaded = load_checkpoint(path)
        except CheckpointError:
            continue
        assert_same(state, loaded)


def test_both_corrupt_raises_naming_the_dir(tmp_path: Path) -> None:
    d = tmp_path / "ckpt"
    save_checkpoint(d, make_state(1), step=1)
    save_checkpoint(d, make_state(2), step=2)
    (d / "last.pt").write_bytes(b"")
    (d / "prev.pt").write_bytes(b"garbage" * 10)
    with pytest.raises(CheckpointError) as info:
        load_latest(d)
    message = str(info.value)
    assert str(d) in message and "delete" in message and "\n" not in message
    assert (d / "prev.pt").read_bytes() == b"garbage" * 10


def test_no_checkpoint_means_none(tmp_path: Path) -> None:
    assert load_latest(tmp_path) is None
    assert load_latest(tmp_path / "does-not-exist") is None


def test_missing_last_uses_prev(tmp_path: Path, caplog) -> None:
    # A crash between the two renames leaves only prev.pt.
    d = tmp_path / "ckpt"
    save_checkpoint(d, make_state(1), step=1)
    save_checkpoint(d, make_state(2), step=2)
    (d / "last.pt").unlink()
    with caplog.at_level(logging.WARNING, logger="cql_runner"):
        state, path = load_latest(d)
    assert path.name == "prev.pt" and state["step"] == 1
    assert "missing" in caplog.text


def test_save_over_corrupt_last_keeps_good_prev(tmp_path: Path) -> None:
    d = tmp_path / "ckpt"
    save_checkpoint(d, make_state(1), step=1)
    save_checkpoint(d, make_state(2), step=2)
    (d / "last.pt").write_bytes(b"torn")
    save_checkpoint(d, make_state(3), step=3)
    assert checkpoint_step(d / "last.pt") == 3
    assert checkpoint_step(d / "prev.pt") == 1
    aside = list(d.glob("last.corrupt-*.pt"))
    assert len(aside) == 1 and aside[0].read_bytes() == b"torn"


def test_missing_file_and_foreign_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    foreign = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a cql_runner checkpoint"):
        load_checkpoint(foreign)
