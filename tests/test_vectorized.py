"""Seed-vectorised training equals K separate runs, and writes K ordinary run dirs."""

from __future__ import annotations

import json
import logging
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


INVERTED_DATASET = "test/inverted-pendulum/tiny-v0"
# InvertedPendulum ends an episode when the pole falls, after a seed-dependent number of steps,
# so the seeds of one run finish their first online episodes (and start updating) at different
# env steps: the case where one seed's schedule could leak into another's.
FINE_TUNE = [
    "debug=tiny",
    "dataset.path=null",
    f"dataset.id={INVERTED_DATASET}",
    "logger=none",
    "cql=calql",
    "train.steps=20",
    "train.log_every=4",
    "train.checkpoint_every=1000",
    "online.steps=24",
    "online.envs=2",
    "online.random_steps=2",
    "eval.every=12",
    "eval.episodes=1",
    "eval.max_episode_steps=20",
    "eval.env_id=InvertedPendulum-v5",
    "network.hidden=[16,16]",
    "cql.n_actions=2",
    "train.batch_size=16",
]


def test_vectorized_fine_tuning_matches_single_runs(
    minari_root: Path, tmp_path: Path, compose_cfg: Callable[..., DictConfig], caplog: pytest.LogCaptureFixture
) -> None:
    """seeds=[0,1] with online.steps>0: seed 1 fine-tunes exactly as a run with seed=1 alone,
    although the two seeds start their online updates at different env steps."""
    from data_helpers import make_minari_dataset

    torch.set_num_threads(1)
    make_minari_dataset(INVERTED_DATASET, env_id="InvertedPendulum-v5", n_episodes=6, max_steps=20, ref_max_score=20.0)
    vec, single = tmp_path / "vec", tmp_path / "single"
    run(compose_cfg([*FINE_TUNE, "seeds=[0,1]", f"run_dir={vec}"]))
    run(compose_cfg([*FINE_TUNE, "seed=1", f"run_dir={single}"]))

    online = {
        seed: [r for r in read_jsonl(vec / f"seed{seed}" / "metrics.jsonl") if "online/env_steps" in r]
        for seed in (0, 1)
    }
    # The case under test happens: the seeds' update counts differ at some log step.
    assert any(a.get("online/updates") != b.get("online/updates") for a, b in zip(online[0], online[1]))

    a, b = _params(single), _params(vec / "seed1")
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=name)
    opt_a = load_checkpoint(single / "checkpoints" / "last.pt")["agent"]["optimizer"]["state"]
    opt_b = load_checkpoint(vec / "seed1" / "checkpoints" / "last.pt")["agent"]["optimizer"]["state"]
    assert opt_a.keys() == opt_b.keys()
    for idx in opt_a:
        for key, value in opt_a[idx].items():
            torch.testing.assert_close(opt_b[idx][key], value, rtol=1e-5, atol=1e-6, msg=f"{idx}/{key}")
    rows_a, rows_b = read_jsonl(single / "metrics.jsonl"), read_jsonl(vec / "seed1" / "metrics.jsonl")
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b]
    for ra, rb in zip(rows_a, rows_b):
        assert ra.keys() == rb.keys(), ra["step"]
        for key, value in ra.items():
            if not key.startswith("perf/"):
                assert rb[key] == pytest.approx(value, rel=1e-4, abs=1e-5), (ra["step"], key)

    # Stopped halfway (the seeds' update counts differ there) and continued: the per-seed
    # checkpoints carry each seed's own counts and stack back into the same run.
    split = tmp_path / "split"
    half = [*FINE_TUNE, "seeds=[0,1]", f"run_dir={split}"]
    run(compose_cfg([*half, "online.steps=12"]))
    states = [load_checkpoint(split / f"seed{k}" / "checkpoints" / "last.pt") for k in (0, 1)]
    assert states[0]["agent"]["num_updates"] != states[1]["agent"]["num_updates"]
    with caplog.at_level(logging.INFO, logger="cql_runner.online.phase"):
        run(compose_cfg(half))
    assert "resuming the online phase at env step 12" in caplog.text
    a, b = _params(vec / "seed1"), _params(split / "seed1")
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=name)
