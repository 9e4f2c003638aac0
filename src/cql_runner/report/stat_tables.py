"""The interval estimates as table cells: full precision for report.csv, rounded for report.md."""

from __future__ import annotations

from collections.abc import Sequence

from cql_runner.report.aggregate import format_value
from cql_runner.report.group_stats import KINDS, Comparison, RowStats
from cql_runner.report.statistics import CONFIDENCE, ESTIMATORS, TITLES, Estimate

NO_INTERVAL = "n = 1, no interval"


def csv_header() -> list[str]:
    """``final_iqm, final_iqm_ci_low, final_iqm_ci_high, ...`` for each score kind and estimator."""
    return [f"{kind}_{name}{suffix}" for kind in KINDS for name in ESTIMATORS for suffix in ("", "_ci_low", "_ci_high")]


def csv_cells(stats: RowStats) -> list[str]:
    cells: list[str] = []
    for kind in KINDS:
        estimates = getattr(stats, kind)
        for name in ESTIMATORS:
            e = None if estimates is None else estimates[name]
            # repr() of a float round-trips exactly; an absent interval is an empty cell, never a fake one.
            cells += ["" if e is None else repr(e.value), _num(e and e.low), _num(e and e.high)]
    return cells


def _num(x: float | None) -> str:
    return "" if x is None else repr(x)


def fmt_estimate(e: Estimate | None) -> str:
    if e is None:
        return "–"
    if not e.has_interval:
        return f"{e.value:.1f} ({NO_INTERVAL})"
    return f"{e.value:.1f} [{e.low:.1f}, {e.high:.1f}]"


def markdown_section(rows: Sequence[RowStats], keys: Sequence[str], reps: int) -> list[str]:
    """The interval-estimate table of the final score, then IQM of the best score, one row per group
    and one per setting aggregated over tasks."""
    pct = round(CONFIDENCE * 100)
    lines = [
        "",
        f"## Interval estimates ({pct}% stratified bootstrap CIs)",
        "",
        _row(["task", *keys, "n", *(f"final {TITLES[n]}" for n in ESTIMATORS), "best IQM"]),
        _row(["---"] * (len(keys) + 3 + len(ESTIMATORS))),
    ]
    for r in rows:
        s = r.scores
        final = r.final or {}
        tasks = s.final.shape[1]
        n = f"{s.n} × {tasks} tasks" if tasks > 1 else str(s.n)
        lines.append(
            _row(
                [
                    s.task,
                    *(format_value(v) for v in s.values),
                    n,
                    *(fmt_estimate(final.get(name)) for name in ESTIMATORS),
                    fmt_estimate((r.best or {}).get("iqm")),
                ]
            )
        )
    truncated = [r.scores for r in rows if r.scores.truncated]
    lines += [
        "",
        f"- Computed with rliable ({reps} bootstrap resamples, percentile intervals): runs are resampled within "
        "each task. IQM is the mean of the middle 50% of runs; optimality gap is the mean shortfall below a "
        "normalized score of 100 (lower is better). A group with one run shows its score and "
        f'"{NO_INTERVAL}".',
        '- "all tasks" rows aggregate a setting over every task it ran (runs × tasks); the median there is '
        "rliable's median of per-task means, within one task the median over runs.",
    ]
    if truncated:
        lines.append(
            "- Unequal run counts per task: "
            + "; ".join(f"{s.setting} uses the first {s.n} runs (by seed) of each task" for s in truncated)
            + "."
        )
    return lines


def compare_section(comparisons: Sequence[Comparison]) -> list[str]:
    if not comparisons:
        return []
    a, b = comparisons[0].a, comparisons[0].b
    pct = round(CONFIDENCE * 100)
    lines = [
        "",
        f"## Probability of improvement: P({a} > {b})",
        "",
        _row(["task", f"P(A > B) [{pct}% CI]", "runs A", "runs B"]),
        _row(["---"] * 4),
    ]
    for c in comparisons:
        e = c.estimate
        text = f"{e.value:.3f}" + (f" [{e.low:.3f}, {e.high:.3f}]" if e.has_interval else f" ({NO_INTERVAL})")
        lines.append(_row([c.task, text, str(c.n_a), str(c.n_b)]))
    lines += [
        "",
        "- P(A > B) is the probability that a run of A scores a higher final normalized score than a "
        "run of B on the same task (ties count ½), averaged over tasks; 0.5 means no difference.",
    ]
    return lines


def compare_csv_rows(comparisons: Sequence[Comparison]) -> list[list[str]]:
    header = ["task", "a", "b", "p_improvement", "ci_low", "ci_high", "n_a", "n_b"]
    return [header] + [
        [c.task, c.a, c.b, repr(c.estimate.value), _num(c.estimate.low), _num(c.estimate.high), str(c.n_a), str(c.n_b)]
        for c in comparisons
    ]


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"
