"""Sweeps through Hydra launchers: each job gets its own run dir and summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY_OVERRIDES, run_cli

FAST = [*TINY_OVERRIDES, "train.steps=40", "train.log_every=20", "eval.every=0", "eval.episodes=1"]


def _summaries(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"))]


def test_joblib_sweep_runs_every_job(minari_root: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", *FAST, "seed=0,1", "launcher=joblib", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summaries = _summaries(sweep)
    assert sorted(s["seed"] for s in summaries) == [0, 1]
    assert all(s["status"] == "completed" for s in summaries)


@pytest.mark.slow
def test_submitit_local_sweep_runs_two_jobs(minari_root: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_cli(
        ["-m", *FAST, "cql.tau=1,5", "launcher=submitit_local", f"hydra.sweep.dir={sweep}"], cwd=tmp_path, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    summaries = _summaries(sweep)
    assert len(summaries) == 2 and all(s["status"] == "completed" for s in summaries)
    taus = sorted(
        float(line.split(":")[1])
        for p in sorted(sweep.glob("*/config.yaml"))
        for line in p.read_text().splitlines()
        if line.strip().startswith("tau:")
    )
    assert taus == [1.0, 5.0]


def test_a_failing_job_does_not_kill_the_sweep(minari_root: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    # The second job's rewards overflow to NaN; the first and third still finish.
    proc = run_cli(["-m", *FAST, "env.reward_scale=1,1e30,2", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    # The sweep goes on, then says so and exits non-zero.
    assert proc.returncode == 1, proc.stderr
    assert f"cql-train: sweep {sweep}: 3 jobs: 2 completed, 1 failed" in proc.stderr.splitlines()
    statuses = [s["status"] for s in _summaries(sweep)]
    assert statuses == ["completed", "failed", "completed"]


@pytest.mark.slow
def test_optuna_search_maximises_the_returned_score(minari_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "sweep"
    proc = run_cli(
        [*FAST, "hparams_search=cql_optuna", "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    results = (sweep / "optimization_results.yaml").read_text()
    best = max(s["final_normalized_score"] for s in _summaries(sweep))
    assert "best_value" in results and f"{best:.6f}"[:6] in results
