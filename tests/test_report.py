"""cql-report: discovery, grouping, aggregation, marking of unfinished/corrupt runs, and outputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.stats
import yaml
from conftest import TINY_OVERRIDES, run_cli

from cql_runner.report.aggregate import curve, group_runs, varied_keys
from cql_runner.report.cli import main
from cql_runner.report.collect_runs import collect, find_run_dirs
from cql_runner.report.render import outlier_symlog_threshold

OUTPUTS = ("report.md", "report.csv", "interval_estimates.png", "performance_profile.png", "curves.png", "q_values.png")


def make_run(
    d: Path,
    *,
    env: str = "hopper-medium",
    seed: int = 0,
    tau: float = 5.0,
    alpha: float = 5.0,
    scores: tuple[float, ...] = (10.0, 20.0),
    status: str | None = "completed",
    summary_scores: tuple[float | None, float | None] | None = None,
) -> Path:
    """A run dir as cql-train writes it: evals every 100 steps, Q-values every 50, summary unless running."""
    d.mkdir(parents=True)
    config = {
        "env": {"name": env},
        "dataset": {"id": f"mujoco/{env}", "path": f"/data/{seed}", "cache_dir": None},
        "cql": {"tau": tau, "alpha": alpha, "n_actions": 10},
        "network": {"hidden": [256, 256]},
        "train": {"steps": 300, "progress": True},
        "logger": {"name": f"run-{seed}"},
        "seed": seed,
        "run_dir": str(d),
        "resume": None,
        "device": "cpu",
    }
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    lines = []
    for i, score in enumerate(scores):
        step = 100 * (i + 1)
        lines.append({"step": step - 50, "q/data": -float(step), "q/policy": -float(step) - 1})
        lines.append({"step": step, "q/data": "NaN", "eval/normalized_score": score, "eval/return": 10 * score})
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    if status is not None:
        final, best = summary_scores or (scores[-1], max(scores))
        summary = {
            "status": status,
            "error": "FloatingPointError: NaN loss" if status == "failed" else None,
            "env": env,
            "seed": seed,
            "steps": 100 * len(scores),
            "final_normalized_score": final,
            "best_normalized_score": best,
        }
        (d / "summary.json").write_text(json.dumps(summary))
    return d


def report(paths: list[Path], out: Path, *extra: str) -> int:
    # Few bootstrap resamples keep the tests fast; tests of the intervals pass their own --reps.
    reps = [] if "--reps" in extra else ["--reps", "200"]
    return main([*(str(p) for p in paths), "--out", str(out), *reps, *extra])


def read_csv(out: Path) -> list[dict[str, str]]:
    with (out / "report.csv").open() as f:
        return list(csv.DictReader(f))


def test_discovers_run_dirs_recursively_in_natural_order(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for i in (0, 2, 10):
        make_run(sweep / str(i), seed=i)
    make_run(tmp_path / "other" / "nested" / "run")
    (sweep / "3").mkdir()  # an empty job dir (not started) is not a run
    (sweep / "0" / ".hydra").mkdir()
    (sweep / "0" / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    found = find_run_dirs([sweep, tmp_path / "other", sweep / "2"])  # overlapping paths: no duplicates
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["other/nested/run", "sweep/0", "sweep/2", "sweep/10"]


def test_many_varied_keys_are_named_by_a_subset_that_keeps_the_same_groups(tmp_path: Path) -> None:
    """Runs of another library carry few of our keys, so every key they lack varies; the groups are
    named by a few keys that split the runs the same way, not by all of them."""
    from cql_runner.report.aggregate import separating_keys

    for method, tau in (("ours", 1.0), ("ours", 10.0)):
        for seed in (0, 1):
            make_run(tmp_path / f"{method}-{tau}-{seed}", seed=seed, tau=tau)
    for seed in (0, 1):  # a peer's run: no cql.* keys, its own peer.* keys
        d = tmp_path / f"peer-{seed}"
        make_run(d, seed=seed)
        config = yaml.safe_load((d / "config.yaml").read_text())
        config.pop("cql")
        config["peer"] = {k: seed * 0 + i for i, k in enumerate("abcdefgh")}
        (d / "config.yaml").write_text(yaml.safe_dump(config))
    runs = collect([tmp_path]).runs
    varied = varied_keys(runs)
    assert len(varied) > 6
    keys = separating_keys(runs, varied)
    assert keys == ["cql.tau"]  # set in our runs, absent (its own value) in the peer's: three groups
    assert sorted(len(g.runs) for g in group_runs(runs, keys)) == [2, 2, 2]
    assert {frozenset(map(id, g.runs)) for g in group_runs(runs, keys)} == {
        frozenset(map(id, g.runs)) for g in group_runs(runs, varied)
    }
    assert separating_keys(runs, varied[:3]) == varied[:3]  # few keys: all kept


def test_varied_keys_ignore_seeds_paths_logger_and_per_task_settings(tmp_path: Path) -> None:
    for env in ("hopper-medium", "walker2d-medium"):  # dataset.id differs only across tasks
        for seed in (0, 1):
            for tau in (1.0, 10.0):
                make_run(tmp_path / f"{env}-{seed}-{tau}", env=env, seed=seed, tau=tau)
    runs = collect([tmp_path]).runs
    assert varied_keys(runs) == ["cql.tau"]
    groups = group_runs(runs, ["cql.tau"])
    assert [(g.task, g.values, len(g.runs)) for g in groups] == [
        ("hopper-medium", (1.0,), 2),
        ("hopper-medium", (10.0,), 2),
        ("walker2d-medium", (1.0,), 2),
        ("walker2d-medium", (10.0,), 2),
    ]


def test_table_is_mean_and_sample_std_over_seeds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for seed, final in enumerate((10.0, 20.0, 30.0)):
        make_run(tmp_path / "runs" / f"a{seed}", seed=seed, tau=2.0, scores=(final + 5, final))
    make_run(tmp_path / "runs" / "b0", tau=10.0, scores=(1 / 3, 40.04))  # numeric order: 2 before 10
    out = tmp_path / "report"
    assert report([tmp_path / "runs"], out) == 0

    rows = read_csv(out)
    assert [r["cql.tau"] for r in rows] == ["2.0", "10.0"]
    a, b = rows
    assert float(a["final_mean"]) == 20.0 and float(a["final_std"]) == 10.0  # ddof=1: sqrt(200/2)
    assert float(a["best_mean"]) == 25.0 and a["final_n"] == "3" and a["seeds"] == "0 1 2"
    assert float(b["final_std"]) == 0.0 and float(b["best_mean"]) == 40.04  # one seed: std 0, full precision
    md = (out / "report.md").read_text()
    assert "| hopper-medium | 2.0 | 3 | 20.0 ± 10.0 | 25.0 ± 10.0 | 3 completed |" in md
    assert "| hopper-medium | 10.0 | 1 | 40.0 ± 0.0 | 40.0 ± 0.0 | 1 completed |" in md
    assert "ddof=1" in md
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == "wrote " + ", ".join(str(out / name) for name in OUTPUTS)
    assert all((out / name).stat().st_size > 0 for name in OUTPUTS)
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_running_and_failed_runs_are_marked_not_fatal(tmp_path: Path) -> None:
    make_run(tmp_path / "done", seed=0, scores=(10.0, 20.0))
    make_run(tmp_path / "going", seed=1, scores=(30.0, 50.0, 40.0), status=None)
    # Preempted at step 100 (stale summary), then resumed: metrics are ahead of the summary.
    make_run(tmp_path / "resumed", seed=2, scores=(0.0, 60.0), status="interrupted", summary_scores=(0.0, 0.0))
    make_run(tmp_path / "crashed", seed=3, scores=(99.0,), status="failed")
    out = tmp_path / "report"
    assert report([tmp_path], out) == 0

    (row,) = read_csv(out)
    assert (row["n_runs"], row["n_completed"], row["n_running"], row["n_failed"]) == ("4", "1", "2", "1")
    # final: summary for the finished run, last logged eval for running ones; the failed run is left out.
    assert float(row["final_mean"]) == pytest.approx((20 + 40 + 60) / 3)
    assert float(row["best_mean"]) == pytest.approx((20 + 50 + 60) / 3)
    md = (out / "report.md").read_text()
    assert (
        "| hopper-medium | 3 | 40.0 ± 20.0 (2 running) | 43.3 ± 20.8 (2 running) | "
        "1 completed, 2 running, 1 failed |" in md
    )
    assert "## Runs not completed" in md
    assert f"| {tmp_path / 'going'} | running | 300/300 |  |" in md
    assert f"| {tmp_path / 'crashed'} | failed | 100/300 | FloatingPointError: NaN loss |" in md


def test_corrupt_runs_are_warned_skipped_and_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_run(tmp_path / "good")
    (make_run(tmp_path / "bad_summary") / "summary.json").write_text('{"status": "compl')
    (make_run(tmp_path / "bad_config") / "config.yaml").write_text("env: [unclosed\n")
    metrics = make_run(tmp_path / "bad_metrics", status=None) / "metrics.jsonl"
    metrics.write_text('{"step": 50}\nnot json\n{"step": 100}\n')
    truncated = make_run(tmp_path / "truncated_tail", status=None) / "metrics.jsonl"
    truncated.write_text(truncated.read_text() + '{"step": 250, "eval/norm')  # a crash mid-write: still fine
    out = tmp_path / "report"
    assert report([tmp_path], out) == 0

    err = capsys.readouterr().err
    for name in ("bad_summary", "bad_config", "bad_metrics"):
        assert f"warning: skipping {tmp_path / name}" in err
    md = (out / "report.md").read_text()
    assert "## Skipped runs (unreadable files)" in md and "3 skipped" in md
    assert f"| {tmp_path / 'bad_metrics'} | " in md and "invalid JSONL line" in md
    (row,) = read_csv(out)
    assert (row["n_runs"], row["n_running"]) == ("2", "1")


def test_group_by_sets_the_keys_explicitly(tmp_path: Path) -> None:
    for i, (tau, alpha) in enumerate([(1.0, 5.0), (1.0, 10.0), (5.0, 5.0), (5.0, 5.0)]):
        make_run(tmp_path / "sweep" / str(i), seed=i, tau=tau, alpha=alpha)
    out = tmp_path / "report"
    assert report([tmp_path / "sweep"], out, "--group-by", "cql.alpha") == 0
    assert [(r["cql.alpha"], r["n_runs"]) for r in read_csv(out)] == [("5.0", "3"), ("10.0", "1")]
    assert report([tmp_path / "sweep"], out, "--group-by", "cql.tau,cql.alpha") == 0
    assert [(r["cql.tau"], r["cql.alpha"]) for r in read_csv(out)] == [("1.0", "5.0"), ("1.0", "10.0"), ("5.0", "5.0")]
    assert "--group-by" in (out / "report.md").read_text()


@pytest.mark.parametrize("case", ["missing_path", "no_runs", "all_corrupt", "unknown_group_key"])
def test_user_errors_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    (tmp_path / "empty").mkdir()
    args: dict[str, Any] = {
        "missing_path": ([tmp_path / "nope"], "path does not exist"),
        "no_runs": ([tmp_path / "empty"], "no run dirs"),
        "all_corrupt": ([tmp_path / "empty"], "unreadable"),
        "unknown_group_key": ([tmp_path / "empty"], "did you mean cql.tau"),
    }
    paths, expected = args[case]
    extra: list[str] = []
    if case == "all_corrupt":
        (make_run(tmp_path / "empty" / "r") / "summary.json").write_text("{")
    if case == "unknown_group_key":
        make_run(tmp_path / "empty" / "r")
        extra = ["--group-by", "cql.tua"]
    capsys.readouterr()
    assert report(paths, tmp_path / "out", *extra) == 2
    err_lines = [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]
    assert len(err_lines) == 1 and expected in err_lines[0]
    assert not (tmp_path / "out").exists()


def test_curves_average_seeds_per_step_and_metric_is_selectable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for env in ("hopper-medium", "walker2d-medium"):
        make_run(tmp_path / env / "0", env=env, seed=0, scores=(10.0, 30.0))
        make_run(tmp_path / env / "1", env=env, seed=1, scores=(20.0,), status=None)  # lagging behind
    runs = [r for r in collect([tmp_path]).runs if r.task == "hopper-medium"]
    c = curve(runs, "eval/normalized_score")
    assert c is not None
    assert c.steps.tolist() == [100, 200] and c.mean.tolist() == [15.0, 30.0] and c.n.tolist() == [2, 1]
    assert c.std[0] == pytest.approx(50**0.5) and c.std[1] == 0.0
    q = curve(runs, "q/data")  # the "NaN" strings at eval steps are dropped, not averaged in
    assert q is not None and q.steps.tolist() == [50, 150] and q.mean.tolist() == [-100.0, -200.0]

    out = tmp_path / "report"
    assert report([tmp_path], out, "--metric", "eval/return") == 0
    assert report([tmp_path], out, "--metric", "eval/nope") == 0
    assert "no run logged 'eval/nope'" in capsys.readouterr().err
    assert (out / "curves.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("peaks", "expected"),
    [
        ([38.6, 33.5, 25.6, 1.0], None),  # ordinary spread: linear axis
        ([59.9, 76.8, 1575.6, 25.5], 59.9),  # one setting far past the others: linear up to the typical peak
        ([5.0, 2000.0], 5.0),
        ([0.0, 0.0, 300.0], None),  # nothing typical to keep readable
        ([1575.6], None),
    ],
)
def test_learning_curves_go_symlog_only_around_an_outlier(peaks: list[float], expected: float | None) -> None:
    assert outlier_symlog_threshold(peaks) == expected


def test_output_is_deterministic(tmp_path: Path) -> None:
    for i, tau in enumerate((10.0, 1.0, 5.0)):
        make_run(tmp_path / "sweep" / str(i), seed=i % 2, tau=tau, scores=(i, 2 * i))
    first, second = tmp_path / "r1", tmp_path / "r2"
    assert report([tmp_path / "sweep"], first) == 0
    assert report([tmp_path / "sweep"], second) == 0
    for name in OUTPUTS:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_interval_estimates_in_csv_and_markdown_and_one_run_has_no_interval(tmp_path: Path) -> None:
    finals = (10.0, 20.0, 30.0, 40.0)
    for seed, final in enumerate(finals):
        make_run(tmp_path / "runs" / f"a{seed}", seed=seed, tau=2.0, scores=(final, final))
    make_run(tmp_path / "runs" / "b0", tau=10.0, scores=(55.0,))
    out = tmp_path / "report"
    assert report([tmp_path / "runs"], out, "--reps", "500") == 0

    a, b = read_csv(out)
    # IQM of 10, 20, 30, 40 trims one value at each end: (20 + 30) / 2.
    assert float(a["final_iqm"]) == 25.0 and float(a["final_median"]) == 25.0
    assert float(a["final_optimality_gap"]) == 75.0
    for name in ("mean", "median", "iqm", "optimality_gap"):
        low, high = float(a[f"final_{name}_ci_low"]), float(a[f"final_{name}_ci_high"])
        assert low <= float(a[f"final_{name}"]) <= high and low < high
        assert b[f"final_{name}_ci_low"] == "" and b[f"final_{name}_ci_high"] == ""  # one run: no fake interval
    assert float(b["final_iqm"]) == 55.0 and float(b["best_iqm"]) == 55.0
    md = (out / "report.md").read_text()
    assert "## Interval estimates (95% stratified bootstrap CIs)" in md
    assert "| hopper-medium | 10.0 | 1 | 55.0 (n = 1, no interval) |" in md
    assert f"| hopper-medium | 2.0 | 4 | 25.0 [{float(a['final_mean_ci_low']):.1f}, " in md
    assert "[interval_estimates.png](interval_estimates.png)" in md


def test_settings_are_aggregated_over_tasks(tmp_path: Path) -> None:
    for env, offset in (("hopper-medium", 0.0), ("walker2d-medium", 50.0)):
        for seed in range(3):
            make_run(tmp_path / env / str(seed), env=env, seed=seed, scores=(offset + 10 * seed,))
    make_run(tmp_path / "walker2d-medium" / "3", env="walker2d-medium", seed=3, scores=(99.0,))  # 4th run
    out = tmp_path / "report"
    assert report([tmp_path], out, "--reps", "300") == 0
    rows = read_csv(out)
    assert [r["task"] for r in rows] == ["hopper-medium", "walker2d-medium", "all tasks"]
    # Equal run counts are needed: the first 3 seeds of each task, 0 10 20 and 50 60 70.
    assert float(rows[2]["final_mean"]) == pytest.approx(35.0) and rows[2]["final_n"] == "3"
    assert float(rows[2]["final_iqm"]) == pytest.approx(35.0)  # one of 6 cut at each end: 10 20 50 60
    md = (out / "report.md").read_text()
    assert "| all tasks | 3 × 2 tasks |" in md and "uses the first 3 runs (by seed) of each task" in md


def test_compare_gives_probability_of_improvement(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for seed in range(3):
        make_run(tmp_path / "low" / str(seed), seed=seed, tau=1.0, scores=(10.0 + seed,))
        make_run(tmp_path / "high" / str(seed), seed=seed, tau=5.0, scores=(20.0 + seed,))
    out = tmp_path / "report"
    assert report([tmp_path], out, "--compare", "cql.tau=5", "cql.tau=1", "--reps", "300") == 0
    (row,) = list(csv.DictReader((out / "compare.csv").open()))
    assert float(row["p_improvement"]) == 1.0 and row["n_a"] == "3"
    assert report([tmp_path], out, "--compare", "1", "1", "--reps", "300") == 0  # a bare value of the one key
    (row,) = list(csv.DictReader((out / "compare.csv").open()))
    assert float(row["p_improvement"]) == 0.5 and float(row["ci_low"]) <= 0.5 <= float(row["ci_high"])
    assert (
        report([tmp_path], out, "--compare", str(tmp_path / "low"), str(tmp_path / "high"), "--reps", "300") == 0
    )  # two run sets
    (row,) = list(csv.DictReader((out / "compare.csv").open()))
    assert float(row["p_improvement"]) == 0.0
    assert "## Probability of improvement: P(" in (out / "report.md").read_text()
    capsys.readouterr()
    assert report([tmp_path], tmp_path / "bad", "--compare", "cql.tau=7", "cql.tau=1") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no runs with that setting" in err[0] and "cql.tau=5.0" in err[0]
    assert not (tmp_path / "bad").exists()


def test_formats_and_iqm_curves(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for seed in range(3):
        make_run(tmp_path / "runs" / str(seed), seed=seed, scores=(10.0 * seed, 5.0 + seed, 30.0))
    out = tmp_path / "report"
    assert report([tmp_path / "runs"], out, "--format", "png,svg,pdf", "--curves", "iqm", "--reps", "200") == 0
    for stem in ("interval_estimates", "performance_profile", "curves", "q_values"):
        assert (out / f"{stem}.png").read_bytes()[:4] == b"\x89PNG"
        assert (out / f"{stem}.pdf").read_bytes()[:4] == b"%PDF"
        assert b"<svg" in (out / f"{stem}.svg").read_bytes()
    assert "IQM with 95% bootstrap band" in (out / "curves.svg").read_text()
    capsys.readouterr()
    assert report([tmp_path / "runs"], tmp_path / "bad", "--format", "png,gif") == 2
    assert "--format 'png,gif': use a comma-separated list of png, svg, pdf" in capsys.readouterr().err


@pytest.mark.slow  # six training runs: about 100 s on a busy 2-core machine
def test_report_on_a_real_tiny_sweep(minari_root: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", "seed=0,1,2", "cql.tau=1,5", *TINY_OVERRIDES, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "report"
    proc = run_cli(
        [str(sweep), "--out", str(out), "--compare", "cql.tau=5", "cql.tau=5", "--reps", "500"],
        cwd=tmp_path,
        script="cql-report",
    )
    assert proc.returncode == 0, proc.stderr
    outputs = ["report.md", "report.csv", "compare.csv", *OUTPUTS[2:]]
    assert proc.stdout.strip().splitlines()[-1] == "wrote " + ", ".join(str(out / n) for n in outputs)
    (self_compare,) = list(csv.DictReader((out / "compare.csv").open()))
    assert float(self_compare["p_improvement"]) == 0.5
    assert float(self_compare["ci_low"]) <= 0.5 <= float(self_compare["ci_high"])

    summaries = [
        json.loads(p.read_text()) | {"tau": yaml.safe_load((p.parent / "config.yaml").read_text())["cql"]["tau"]}
        for p in sorted(sweep.glob("*/summary.json"))
    ]
    assert len(summaries) == 6 and all(s["status"] == "completed" for s in summaries)
    rows = read_csv(out)
    assert [r["cql.tau"] for r in rows] == ["1.0", "5.0"]
    md = (out / "report.md").read_text()
    for row in rows:
        mine = [s for s in summaries if str(s["tau"]) == row["cql.tau"]]
        assert row["n_completed"] == "3" and row["seeds"] == "0 1 2"
        for key in ("final", "best"):
            values = np.array([s[f"{key}_normalized_score"] for s in mine])
            assert float(row[f"{key}_mean"]) == pytest.approx(values.mean(), rel=1e-12)
            assert float(row[f"{key}_std"]) == pytest.approx(values.std(ddof=1), rel=1e-9)
            # rliable's IQM is scipy's trim_mean, cutting int(0.25 n) runs at each end (none of 3).
            assert float(row[f"{key}_iqm"]) == pytest.approx(scipy.stats.trim_mean(values, 0.25), rel=1e-12)
            assert float(row[f"{key}_median"]) == pytest.approx(np.median(values), rel=1e-12)
            assert float(row[f"{key}_iqm_ci_low"]) <= float(row[f"{key}_iqm"]) <= float(row[f"{key}_iqm_ci_high"])
        final, best = float(row["final_mean"]), float(row["best_mean"])
        assert f"| {row['cql.tau']} | 3 | {final:.1f} ± " in md and f" | {best:.1f} ± " in md
