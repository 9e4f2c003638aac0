"""The fine-tuning section of the evidence suite: its numbers on hand-made metric rows, the cql-train
command lines of the ft-* methods, and a tiny suite with those methods through the real console script."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from cql_runner.evidence.finetune_page import finetune_lines, reading_lines, table_rows
from cql_runner.evidence.finetune_table import (
    cumulative_regret,
    dip_score,
    final_online_score,
    online_curve,
    online_steps_of,
    pre_switch_score,
    seed_numbers,
)
from cql_runner.evidence.gather_runs import Cell
from cql_runner.evidence.run_suite import parse_args, plan_from_args, trained
from cql_runner.evidence.suite_plan import MethodSpec, make_plan, train_args
from cql_runner.report.collect_runs import SCORE_KEY, Run

ENV = "online/env_steps"


def _rows(offline: list[tuple[int, float]], online: list[tuple[int, float]], train_steps: int) -> list[dict]:
    """Metric rows as cql-train logs them: offline evals at their step, online ones at train_steps + env step
    with the env step in the row; loss rows without a score in between."""
    rows: list[dict] = [{"step": 50, "loss/critic": 1.0}]
    rows += [{"step": s, SCORE_KEY: v} for s, v in offline]
    for env_step, v in online:
        rows.append({"step": train_steps + env_step, ENV: float(env_step), "online/return": 3.0})
        rows.append({"step": train_steps + env_step, ENV: float(env_step), SCORE_KEY: v})
    return rows


# ----- the numbers -----------------------------------------------------------------------------------
@pytest.mark.math  # the table's arithmetic on hand-made rows, against hand-computed values
def test_pre_switch_dip_final_and_regret_by_hand():
    # 1000 offline steps, then 1000 env steps evaluated every 50: the first 10% is env steps ≤ 100.
    rows = _rows([(500, 30.0), (1000, 40.0)], [(50, 20.0), (100, 10.0), (150, 5.0), (500, 60.0), (1000, 80.0)], 1000)
    assert pre_switch_score(rows) == 40.0  # the last offline eval, not the best
    assert dip_score(rows, 1000) == 10.0  # 5.0 at env step 150 is after the window
    edge = _rows([(1000, 40.0)], [(70, 3.0), (140, 1.0)], 1000)
    assert dip_score(edge, 700) == 3.0  # the window includes its boundary: env step 70 of 700
    assert final_online_score(rows) == 80.0
    # mean of (1 - s/100) over the 5 online evals: (0.8 + 0.9 + 0.95 + 0.4 + 0.2) / 5
    assert cumulative_regret(rows) == pytest.approx(0.65)
    numbers = seed_numbers(rows, 1000)
    assert numbers == (40.0, 10.0, 80.0, pytest.approx(0.65))


@pytest.mark.math  # the table's arithmetic on hand-made rows, against hand-computed values
def test_scratch_run_has_no_pre_switch_and_regret_is_not_clipped_above_100():
    rows = _rows([(0, 7.0)], [(100, 120.0), (200, 100.0)], 0)
    assert pre_switch_score(rows) is None  # the step-0 evaluation of the untrained policy is no pre-training
    assert cumulative_regret(rows) == pytest.approx(((1 - 1.2) + 0.0) / 2)
    assert dip_score(rows, 1000) == 120.0
    assert dip_score(rows, 500) is None  # no evaluation in the first 50 env steps
    assert online_steps_of({"online.steps": 1000}, rows) == 1000.0
    assert online_steps_of({}, rows) == 200.0  # without a config: the last env step logged


@pytest.mark.math  # the table's arithmetic on hand-made rows, against hand-computed values
def test_online_curve_puts_the_pre_switch_score_at_env_step_zero_and_averages_seeds():
    a = _rows([(1000, 40.0)], [(100, 10.0), (200, 50.0)], 1000)
    b = _rows([(1000, 60.0)], [(100, 30.0), (200, 70.0)], 1000)
    curve = online_curve([a, b])
    assert curve.env_steps.tolist() == [0.0, 100.0, 200.0]
    assert curve.mean.tolist() == [50.0, 20.0, 60.0]
    assert curve.std == pytest.approx([np.std([40, 60], ddof=1)] * 3)
    assert curve.n.tolist() == [2, 2, 2]


@pytest.mark.math  # the table's arithmetic on hand-made rows, against hand-computed values
def test_table_rows_give_mean_std_over_seeds_and_the_per_seed_drop():
    def run(seed: int, pre: float, dip: float, final: float) -> Run:
        rows = _rows([(1000, pre)], [(100, dip), (1000, final)], 1000)
        return Run(Path(f"seed{seed}"), {"online.steps": 1000, "seed": seed}, rows, None, "completed")

    cell = Cell(
        "hopper-medium", "ft-cql", [run(0, 40.0, 10.0, 60.0), run(1, 50.0, 30.0, 80.0), run(2, 60.0, 20.0, 70.0)]
    )
    (row,) = table_rows([cell])
    # pre 40, 50, 60: 50 ± 10; dip 10, 30, 20: 20 ± 10; drops 30, 20, 40: 30 ± 10; final 60, 80, 70: 70 ± 10
    # regret per seed: mean(1 - dip/100, 1 - final/100) = 0.65, 0.45, 0.55 -> 0.550 ± 0.100
    assert row == [
        "hopper-medium",
        "ft-cql",
        "3",
        "50.0 ± 10.0",
        "20.0 ± 10.0",
        "30.0 ± 10.0",
        "70.0 ± 10.0",
        row[7],
        "0.550 ± 0.100",
    ]
    assert row[7].startswith("70.0 [")  # IQM of 3 seeds is their mean, with a bootstrap interval
    md = "\n".join(finetune_lines([cell], {"online_steps": 1000, "train_steps": 1000}, None, Path(".")))
    assert "cumulative regret" in md and "(1 − normalized score / 100)" in md and "1000 online env steps" in md


@pytest.mark.math  # the table's arithmetic on hand-made rows, against hand-computed values
def test_generated_reading_ranks_regret_and_calls_a_drop_within_the_spread_no_change():
    def cell(method: str, seeds: list[tuple[float, float, float]]) -> Cell:
        runs = [
            Run(Path(f"s{i}"), {"online.steps": 1000}, _rows([(1000, p)], [(100, d), (1000, f)], 1000), None, "done")
            for i, (p, d, f) in enumerate(seeds)
        ]
        return Cell("hopper-medium", method, runs)

    dips = cell("ft-cql", [(50.0, 10.0, 60.0), (50.0, 20.0, 60.0)])  # drops 40, 30: a dip
    flat = cell("ft-calql", [(50.0, 52.0, 70.0), (50.0, 45.0, 70.0)])  # drops -2, 5: within the spread
    text = "\n".join(reading_lines([dips, flat]))
    # regret per seed: ft-cql 0.65, 0.60 -> 0.625 ± 0.035; ft-calql 0.39, 0.425 -> 0.4075 ± 0.025
    assert "lowest cumulative regret: **ft-calql** (ranking: ft-calql 0.408 ± 0.025, ft-cql 0.625 ± 0.035)" in text
    assert "ft-cql: from the switch to the dip the score fell (-35.0 ± 7.1 points, 2 seeds)" in text
    assert (
        "ft-calql: from the switch to the dip the score changed by no more than the spread over seeds (or 1 point) "
        "(-1.5 ± 4.9" in text
    )
    # Seeds alike to a tenth of a point: a 0.5-point dip is still evaluation noise, not a fall.
    alike = cell("ft-cql", [(50.0, 49.5, 60.0), (50.0, 49.5, 60.0)])
    assert "changed by no more than the spread over seeds (or 1 point) (-0.5 ± 0.0" in "\n".join(reading_lines([alike]))
    assert reading_lines([]) == []


# ----- the command lines -----------------------------------------------------------------------------
def test_ft_methods_compose_the_exact_cql_train_schedule(tmp_path):
    plan = make_plan("finetune")
    assert [d.key for d in plan.datasets] == ["hopper-medium", "inverteddoublependulum-medium"]
    assert [m.name for m in plan.methods] == ["ft-cql", "ft-calql", "ft-sac-scratch"]
    assert plan.seeds == (0, 1, 2)
    hopper = plan.datasets[0]
    T, N, E = plan.train_steps, plan.online_steps, plan.online_eval_every
    wanted = {
        "ft-cql": ["cql=default", f"train.steps={T}", f"online.steps={N}", f"eval.every={E}"],
        "ft-calql": ["cql=calql", f"train.steps={T}", f"online.steps={N}", f"eval.every={E}"],
        "ft-sac-scratch": ["cql=sac", "train.steps=0", f"online.steps={N}", f"eval.every={E}"],
    }
    for method in plan.methods:
        args = train_args(plan, hopper, method, tmp_path / method.name)
        for a in (*wanted[method.name], "seeds=[0,1,2]", "train.threads=1", "env=hopper-medium"):
            assert a in args, (method.name, a, args)
        # one value per key: no second train.steps or eval.every for Hydra to pick between
        keys = [a.split("=")[0] for a in args]
        assert len(keys) == len(set(keys)), args
    # the offline methods keep their schedule and get no online phase
    offline = make_plan("default", datasets=["hopper-medium"])
    args = train_args(offline, offline.datasets[0], offline.methods[0], tmp_path)
    assert f"train.steps={offline.train_steps}" in args and not any(a.startswith("online.") for a in args)


def test_cli_flags_set_the_online_budget_and_a_missing_one_fails_in_one_line():
    plan = plan_from_args(
        parse_args(
            ["/tmp/x", "--methods", "ft-cql,ft-sac-scratch", "--online-steps", "700", "--online-eval-every", "70"]
        )
    )
    assert (plan.online_steps, plan.online_eval_every) == (700, 70)
    args = train_args(plan, plan.datasets[0], plan.methods[1], Path("/tmp/x"))
    assert "online.steps=700" in args and "eval.every=70" in args and "train.steps=0" in args
    with pytest.raises(SystemExit, match="--online-steps"):
        plan_from_args(parse_args(["/tmp/x", "--methods", "ft-calql"]))  # default plan: no online budget


def test_a_finished_online_cell_counts_offline_plus_online_steps(tmp_path):
    plan = make_plan("tiny", methods=["ft-calql", "ft-sac-scratch"])
    ft, scratch = plan.methods
    run = tmp_path / "run"
    run.mkdir()
    summary = {"status": "completed", "steps": plan.train_steps}  # offline done, online not
    (run / "summary.json").write_text(json.dumps(summary))
    offline = MethodSpec("bc", ("cql=bc",))
    assert trained(plan, run, offline) and not trained(plan, run, ft)
    summary["steps"] = plan.train_steps + plan.online_steps
    (run / "summary.json").write_text(json.dumps(summary))
    assert trained(plan, run, ft)
    summary["steps"] = plan.online_steps  # from scratch: env steps only
    (run / "summary.json").write_text(json.dumps(summary))
    assert trained(plan, run, scratch) and not trained(plan, run, ft)


# ----- the tiny suite end to end ----------------------------------------------------------------------
def _suite(out: Path, docs: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(
        ["run", str(out), "--budget", "tiny", "--docs", str(docs), "--methods", "ft-cql,ft-calql,ft-sac-scratch"],
        cwd=out.parent,
        timeout=400,
        script="cql-evidence",
        env={"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.slow
def test_tiny_finetune_suite_writes_the_table_and_resumes_without_rerunning(tmp_path):
    out, docs = tmp_path / "suite", tmp_path / "docs"
    first = _suite(out, docs)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    plan = make_plan("tiny", methods=["ft-cql", "ft-calql", "ft-sac-scratch"])
    ds = plan.datasets[0]
    for method in plan.methods:
        summary = json.loads((out / "runs" / ds.key / method.name / "summary.json").read_text())
        offline = 0 if method.name == "ft-sac-scratch" else plan.train_steps
        assert summary["status"] == "completed" and summary["steps"] == offline + plan.online_steps
        assert summary["online_env_steps"] == plan.online_steps
    md = (docs / "RESULTS.md").read_text()
    assert "## Offline-to-online fine-tuning" in md and "cumulative regret" in md
    section = md.split("## Offline-to-online fine-tuning")[1].split("\n## ")[0]
    for method in plan.methods:
        line = next(x for x in section.splitlines() if x.startswith(f"| {ds.key} | {method.name} | 1 | "))
        cols = [c.strip() for c in line.strip("|").split("|")]
        assert (cols[3] == "–") == (method.name == "ft-sac-scratch")  # pre-switch: only after pre-training
        assert cols[4] != "–" and cols[6] != "–" and math.isfinite(float(cols[8].split(" ± ")[0]))
    assert (docs / "evidence" / "finetune_curves.png").stat().st_size > 0
    stamp = (out / "runs" / ds.key / "ft-calql" / "summary.json").stat().st_mtime_ns

    second = _suite(out, docs)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert second.stdout.count("skipping") == len(plan.methods)
    assert (out / "runs" / ds.key / "ft-calql" / "summary.json").stat().st_mtime_ns == stamp
