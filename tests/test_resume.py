"""Preemption-safe, exact resume through real signals and the real CLI."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from conftest import TINY_OVERRIDES, run_cli, start_cli, wait_for_file

from cql_runner.checkpoint import load_checkpoint
from cql_runner.logging import read_jsonl


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_checkpoints_and_resume_matches_an_uninterrupted_run(
    minari_root: Path, tmp_path: Path, signum: int
) -> None:
    common = [*TINY_OVERRIDES, "eval.every=0", "train.log_every=20", "train.checkpoint_every=100000"]
    split, full = tmp_path / "split", tmp_path / "full"

    proc = start_cli([*common, "train.steps=100000", f"run_dir={split}"], cwd=tmp_path)
    wait_for_file(split / "metrics.jsonl", proc)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert f"received {signal.Signals(signum).name}" in stdout + stderr
    summary = json.loads((split / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    k = load_checkpoint(split / "checkpoints" / "last.pt")["trainer"]["step"]
    assert 20 <= k == summary["steps"] < 100000

    # Resume to k + 60 steps, and compare with one run straight to k + 60.
    total = k + 60
    resumed = run_cli([*common, f"train.steps={total}", f"run_dir={split}"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert run_cli([*common, f"train.steps={total}", f"run_dir={full}"], cwd=tmp_path).returncode == 0

    a = load_checkpoint(full / "checkpoints" / "last.pt")
    b = load_checkpoint(split / "checkpoints" / "last.pt")
    assert a["trainer"]["step"] == b["trainer"]["step"] == total
    for name, tensor in a["agent"]["modules"].items():
        torch.testing.assert_close(b["agent"]["modules"][name], tensor, rtol=1e-5, atol=1e-6, msg=name)

    steps = [r["step"] for r in read_jsonl(split / "metrics.jsonl")]
    assert steps == sorted(set(steps)), "duplicate or out-of-order steps after resume"
    assert steps == [r["step"] for r in read_jsonl(full / "metrics.jsonl")]
    assert json.loads((split / "summary.json").read_text())["status"] == "completed"


def test_truncated_last_checkpoint_falls_back_to_prev(minari_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [*TINY_OVERRIDES, "eval.every=0", "train.checkpoint_every=50", f"run_dir={run_dir}"]
    assert run_cli([*args, "train.steps=100"], cwd=tmp_path).returncode == 0
    last = run_dir / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])

    proc = run_cli([*args, "train.steps=150"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "is corrupt" in proc.stdout + proc.stderr and "falling back" in proc.stdout + proc.stderr
    assert load_checkpoint(last)["trainer"]["step"] == 150
    # It resumed from prev.pt (step 50), so the log continues from there without duplicates.
    steps = [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")]
    assert steps == [50, 100, 150]
