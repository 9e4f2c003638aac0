"""The evidence page's conservatism check: α′ and Q on dataset pairs against their Monte-Carlo return."""

from __future__ import annotations

from pathlib import Path

from cql_runner.evidence.conservatism import (
    ALPHA_PRIME_FLOOR,
    cell_checks,
    checked_cells,
    conservatism_lines,
    seed_check,
)
from cql_runner.evidence.gather_runs import Cell
from cql_runner.report.collect_runs import Run


def _run(seed: int, alpha: list[float], q: list[float], mc: list[float], every: int = 250) -> Run:
    metrics = [
        {"step": every * (i + 1), "alpha_prime": a, "q/data": qv, "q/dataset_mc_return": m}
        for i, (a, qv, m) in enumerate(zip(alpha, q, mc, strict=True))
    ]
    return Run(Path(f"/x/runs/hopper-medium/cql-default/seed{seed}"), {}, metrics, None, "completed")


def test_a_seed_that_stays_below_its_return_with_alpha_prime_alive_is_conservative() -> None:
    c = seed_check(_run(0, [1.0, 0.8, 0.6, 0.5], [10, 20, 30, 40], [100, 100, 100, 100]))
    assert c is not None
    assert c.steps == (250, 500, 750, 1000) and c.alpha_prime == (1.0, 0.8, 0.6, 0.5)
    assert c.q_data == (10, 20, 30, 40) and c.mc_return == (100, 100, 100, 100)
    assert c.worst_excess == -60 and c.q_below_mc and c.alpha_prime_kept and c.conservative


def test_annealed_alpha_prime_or_one_step_above_the_return_fails_the_check() -> None:
    annealed = seed_check(_run(1, [1.0, 0.3, 0.03, 0.012], [10, 20, 30, 40], [100] * 4))
    assert annealed is not None and annealed.q_below_mc and not annealed.alpha_prime_kept
    assert not annealed.conservative and annealed.alpha_prime[-1] < ALPHA_PRIME_FLOOR
    # One logged step above the return anywhere (here mid-training) is enough to fail.
    above = seed_check(_run(2, [1.0] * 4, [10, 105, 30, 40], [100] * 4))
    assert above is not None and above.worst_excess == 5 and not above.conservative


def test_runs_without_a_multiplier_are_left_out_and_the_section_says_so_per_cell() -> None:
    no_alpha = Run(Path("/x/runs/hopper-medium/bc/seed0"), {}, [{"step": 250, "q/data": 1.0}], None, "completed")
    assert seed_check(no_alpha) is None
    # BC and fixed-α runs log α′ = 0 throughout, or say cql.lagrange=false: no multiplier to check.
    zero = _run(0, [0.0] * 4, [1, 2, 3, 4], [9] * 4)
    assert seed_check(zero) is None
    fixed = _run(0, [1.0] * 4, [1, 2, 3, 4], [9] * 4)
    fixed.config["cql.lagrange"] = False
    assert seed_check(fixed) is None
    assert conservatism_lines(checked_cells([Cell("hopper-medium", "bc", [no_alpha])])) == []
    cell = Cell(
        "hopper-medium",
        "cql-default",
        [_run(1, [1.0, 0.3, 0.03, 0.012], [1, 2, 3, 4], [9] * 4), _run(0, [1.0] * 4, [1, 2, 3, 4], [9] * 4)],
    )
    assert [c.seed for c in cell_checks(cell)] == ["seed0", "seed1"]
    text = "\n".join(conservatism_lines(checked_cells([cell])))
    assert (
        "| hopper-medium | cql-default | seed0 | 250, 500, 750, 1k | 1, 1, 1, 1 | 1/9, 2/9, 3/9, 4/9 | -5.0 | yes |"
        in text
    )
    assert "| seed1 |" in text and text.count("| no |") == 1
    assert "hopper-medium / cql-default: conservative in 1 of 2 seeds" in text


def test_a_longer_run_is_scored_as_of_a_common_step() -> None:
    """`cql-evidence results --at-step N`: a 20k run compared with 10k runs counts its evaluations up to 10k."""
    from cql_runner.evidence.gather_runs import as_of_step
    from cql_runner.report.collect_runs import final_and_best

    metrics = [{"step": s, "eval/normalized_score": v} for s, v in [(5000, 30.0), (10000, 20.0), (20000, 50.0)]]
    summary = {"steps": 20000, "final_normalized_score": 50.0, "best_normalized_score": 50.0, "wall_time_s": 400.0}
    run = Run(Path("/x/runs/hopper-medium/cql-default/seed0"), {}, metrics, summary, "completed")
    assert final_and_best(run) == (50.0, 50.0)
    at = as_of_step(run, 10000)
    assert final_and_best(at) == (20.0, 30.0)
    assert at.summary is not None and at.summary["wall_time_s"] == 200.0 and at.last_step == 10000
    assert as_of_step(at, 10000) is at  # a run that ends at or before the step is unchanged


def test_results_on_a_dir_without_runs_is_one_line(tmp_path: Path, capsys) -> None:
    from cql_runner.evidence.results_page import main

    (tmp_path / "runs").mkdir()
    assert main([str(tmp_path), "--out", str(tmp_path / "docs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cql-evidence results: error:") and "no run dirs" in err[0]


def test_the_page_says_what_each_method_trains() -> None:
    from cql_runner.evidence.results_page import method_lines

    plan = {
        "methods": [
            {"name": "cql-as-d3rlpy", "overrides": ["cql=default", "cql.alpha=2.5"], "peer": None},
            {"name": "d3rlpy-cql", "overrides": [], "peer": "cql"},
        ]
    }
    text = "\n".join(method_lines(plan))
    assert "| cql-as-d3rlpy | `cql=default cql.alpha=2.5` |" in text
    assert "| d3rlpy-cql | d3rlpy 2.8.1 `CQL` at its defaults" in text
    assert method_lines({}) == []
