"""Seed-vectorised training equals K separate runs, and writes K ordinary run dirs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import TINY_OVERRIDES, run_cli
from omegaconf import DictConfig

from cql_runner.checkpoint import load_checkpoint
from cql_runner.logging import read_jsonl
from cql_runner.run import run

STEPS = ["train.steps=300", "train.log_every=100", "eval.every=150", "train.checkpoint_every=150"]


def _params(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["agent"]["modules"]


def test_vectorized_seeds_match_single_runs(
    minari_root: Path, tmp_path: Path, compose_cfg: Callable[..., DictConfig]
) -> None:
    torch.set_num_threads(1)
    vec = tmp_path / "vec"
    out = run(compose_cfg([*TINY_OVERRIDES, *STEPS, "seeds=[3,8]", f"run_dir={vec}"]))
    assert out["seeds"] == [3, 8] and len(out["runs"]) == 2

    for seed in (3, 8):
        single = tmp_path / f"single{seed}"
        run(compose_cfg([*TINY_OVERRIDES, *STEPS, f"seed={seed}", f"run_dir={single}"]))
        a, b = _params(single), _params(vec / f"seed{seed}")
        assert a.keys() == b.keys()
        for name in a:
            torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=name)
        rows_a = read_jsonl(single / "metrics.jsonl")
        rows_b = read_jsonl(vec / f"seed{seed}" / "metrics.jsonl")
        assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b]
        for ra, rb in zip(rows_a, rows_b):
            for key in ("loss/critic", "cql/gap", "eval/return"):
                if key in ra:
                    assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-5), key
        sa = json.loads((single / "summary.json").read_text())
        sb = json.loads((vec / f"seed{seed}" / "summary.json").read_text())
        assert sb["seed"] == seed and sb["final_return"] == pytest.approx(sa["final_return"], rel=1e-5)
        # Each seed dir is an ordinary single-seed run: its config names its own seed only.
        config = (vec / f"seed{seed}" / "config.yaml").read_text()
        assert f"seed: {seed}" in config and "seeds: null" in config


def test_num_seeds_via_the_cli_resumes_per_seed(minari_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "vec"
    args = [*TINY_OVERRIDES, "eval.every=0", "train.num_seeds=2", "seed=5", f"run_dir={run_dir}"]
    assert run_cli([*args, "train.steps=100"], cwd=tmp_path).returncode == 0
    proc = run_cli([*args, "train.steps=150"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for seed in (5, 6):
        assert [r["step"] for r in read_jsonl(run_dir / f"seed{seed}" / "metrics.jsonl")] == [50, 100, 150]
        assert json.loads((run_dir / f"seed{seed}" / "summary.json").read_text())["steps"] == 150
