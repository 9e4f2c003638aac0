"""End to end through the real `cql-train` console script."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_OVERRIDES, run_cli
from data_helpers import make_minari_dataset

from cql_runner.checkpoint import load_checkpoint
from cql_runner.logging import read_jsonl


def test_train_writes_metrics_summary_and_checkpoint(minari_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = run_cli([*TINY_OVERRIDES, f"run_dir={run_dir}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr

    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [50, 100, 150, 200]
    for key in (
        "loss/critic",
        "loss/actor",
        "alpha",
        "alpha_prime",
        "cql/gap",
        "q/data",
        "q/policy",
        "perf/steps_per_s",
    ):
        assert all(key in r for r in rows), key
    evals = [r for r in rows if "eval/normalized_score" in r]
    assert [r["step"] for r in evals] == [100, 200]
    assert all("eval/return" in r for r in evals)

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 200
    assert summary["final_normalized_score"] == pytest.approx(evals[-1]["eval/normalized_score"])
    assert summary["best_normalized_score"] == pytest.approx(max(r["eval/normalized_score"] for r in evals))
    assert summary["wall_time_s"] > 0

    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert state["trainer"]["step"] == 200
    assert (run_dir / "checkpoints" / "prev.pt").exists()
    config = (run_dir / "config.yaml").read_text()
    assert "n_actions: 4" in config and "${" not in config  # resolved


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("cql.tau=-1", "cql.tau must be >= 0"),
        ("cql.n_actions=0", "cql.n_actions must be >= 1"),
        ("env=hoper-medium", "hoper-medium"),
        ("cql.tua=3", "unknown key 'cql.tua'; did you mean cql.tau?"),
        (
            "logger.wandb.mode=offline",
            "logger.wandb.mode is set but logger=none does not select wandb; pass logger=wandb",
        ),
        ("logger.mode=offline", "unknown key 'logger.mode'"),
    ],
)
def test_bad_overrides_fail_fast_with_a_clear_message(
    minari_root: Path, tmp_path: Path, override: str, expected: str
) -> None:
    proc = run_cli([*TINY_OVERRIDES, f"run_dir={tmp_path / 'run'}", override], cwd=tmp_path)
    assert proc.returncode != 0
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_dataset_is_one_line_naming_the_fix(minari_root: Path, tmp_path: Path) -> None:
    proc = run_cli(["env=walker2d-expert", f"run_dir={tmp_path / 'run'}", "logger=none"], cwd=tmp_path)
    assert proc.returncode == 2
    error_lines = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(error_lines) == 1
    assert "minari download mujoco/walker2d/expert-v0" in error_lines[0]
    assert "cql-collect" in error_lines[0]


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_good_checkpoint(minari_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    ok = run_cli([*TINY_OVERRIDES, f"run_dir={run_dir}", "train.steps=100", "eval.every=0"], cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    before = (run_dir / "checkpoints" / "last.pt").read_bytes()
    # Continue the same run with rewards that overflow (a change accepted explicitly): the loss turns NaN.
    proc = run_cli(
        [
            *TINY_OVERRIDES,
            f"run_dir={run_dir}",
            "train.steps=200",
            "eval.every=0",
            "env.reward_scale=1e30",
            "resume_allow_changes=true",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "NaN/inf" in proc.stderr and "last good checkpoint (step 100)" in proc.stderr
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == before
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [50, 100]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"


def test_a_tau_the_gap_cannot_reach_warns_once_and_the_run_goes_on(minari_root: Path, tmp_path: Path) -> None:
    proc = run_cli(
        [
            *TINY_OVERRIDES,
            f"run_dir={tmp_path / 'run'}",
            "train.steps=150",
            "eval.every=0",
            "cql.tau=0",
            "cql.alpha_prime_init=1000",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    # Hydra's job logging prints to stdout.
    warnings = [line for line in (proc.stdout + proc.stderr).splitlines() if "raise cql.tau above" in line]
    assert len(warnings) == 1 and "cql.tau=0" in warnings[0] and "cql.lagrange=false" in warnings[0]


def test_tau_without_lagrange_warns_once(minari_root: Path, tmp_path: Path) -> None:
    """The CLI warns about settings without effect, decided from the composed config (a YAML file's
    value counts the same: tests/test_config.py)."""
    proc = run_cli(
        [
            *TINY_OVERRIDES,
            f"run_dir={tmp_path / 'run'}",
            "train.steps=2",
            "eval.every=0",
            "eval.episodes=1",
            "cql=fixed",
            "cql.tau=3",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "has no effect" in line]
    assert len(lines) == 1 and "cql.tau is set but cql.lagrange=false" in lines[0]


def test_rerun_in_the_same_dir_resumes_exactly(minari_root: Path, tmp_path: Path) -> None:
    full, split = tmp_path / "full", tmp_path / "split"
    assert run_cli([*TINY_OVERRIDES, f"run_dir={full}"], cwd=tmp_path).returncode == 0
    assert run_cli([*TINY_OVERRIDES, f"run_dir={split}", "train.steps=100"], cwd=tmp_path).returncode == 0
    assert run_cli([*TINY_OVERRIDES, f"run_dir={split}"], cwd=tmp_path).returncode == 0

    a = load_checkpoint(full / "checkpoints" / "last.pt")["agent"]["modules"]
    b = load_checkpoint(split / "checkpoints" / "last.pt")["agent"]["modules"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    steps = [r["step"] for r in read_jsonl(split / "metrics.jsonl")]
    assert steps == sorted(set(steps))


def test_hopper_medium_trains_on_a_local_minari_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    make_minari_dataset("mujoco/hopper/medium-v0", env_id="Hopper-v5", n_episodes=3, max_steps=60)
    run_dir = tmp_path / "run"
    proc = run_cli(
        [
            "env=hopper-medium",
            "cql.tau=10",
            "train.steps=40",
            "train.log_every=20",
            "train.batch_size=32",
            "eval.every=0",
            "eval.episodes=2",
            "eval.max_episode_steps=50",
            "network.hidden=[32,32]",
            "logger=none",
            f"run_dir={run_dir}",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["dataset_id"] == "mujoco/hopper/medium-v0" and summary["steps"] == 40
    # Hopper's D4RL reference returns come from the env config (the dataset has none).
    assert summary["final_normalized_score"] == pytest.approx(
        100 * (summary["final_return"] + 20.272305) / (3234.3 + 20.272305)
    )


def test_legacy_d4rl_file_trains_and_uses_d4rl_reference_scores(tmp_path: Path) -> None:
    from data_helpers import make_d4rl_file

    path = tmp_path / "hopper-medium-v2.hdf5"
    make_d4rl_file(
        path,
        episode_lengths=[40, 30],
        episode_ends=["terminated", "truncated"],
        obs_dim=11,
        act_dim=3,
        with_next_observations=False,
        seed=0,
    )
    run_dir = tmp_path / "run"
    proc = run_cli(
        [
            "env=d4rl-file",
            f"dataset.path={path}",
            "eval.env_id=Hopper-v4",
            "train.steps=20",
            "train.batch_size=32",
            "train.log_every=10",
            "eval.every=0",
            "eval.episodes=1",
            "eval.max_episode_steps=30",
            "network.hidden=[16,16]",
            "cql.n_actions=2",
            "logger=none",
            f"run_dir={run_dir}",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["dataset_id"] == "hopper-medium-v2"
    assert summary["final_normalized_score"] == pytest.approx(
        100 * (summary["final_return"] + 20.272305) / (3234.3 + 20.272305)
    )
