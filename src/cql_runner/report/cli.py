"""``cql-report``: summarize runs and sweeps from their local files (never wandb).

    cql-report DIR [DIR ...] --out OUTDIR [--group-by cql.tau,cql.alpha] [--metric eval/return]
               [--compare A B] [--curves mean|iqm] [--format png,svg,pdf] [--reps 2000] [--seed 0]

Finds every run dir under the DIRs (a dir with config.yaml and metrics.jsonl or summary.json),
groups runs by task × the config keys that vary between them (or --group-by), and writes
OUTDIR/report.md and report.csv (mean ± std, and mean, median, IQM and optimality gap with 95%
stratified bootstrap CIs from rliable), the figures interval_estimates, performance_profile,
curves and q_values, and with --compare, compare.csv with P(A > B). Unfinished and failed runs
are marked, unreadable ones skipped with a warning. User errors print one line and exit 2; the
last line printed names the output files.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cql_runner.report.aggregate import check_group_keys, group_runs, metric_names, separating_keys, varied_keys
from cql_runner.report.collect_runs import SCORE_KEY, Collection, ReportError, collect
from cql_runner.report.figure_io import FORMATS, parse_formats
from cql_runner.report.group_stats import across_tasks, compare, group_scores, row_stats
from cql_runner.report.render import CURVE_STATS, Q_METRICS, plot_curves, plot_q_values, write_csv, write_markdown
from cql_runner.report.stat_figures import plot_interval_estimates, plot_performance_profile
from cql_runner.report.stat_tables import compare_csv_rows, compare_section, markdown_section
from cql_runner.report.statistics import DEFAULT_REPS, DEFAULT_SEED

PROG = "cql-report"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Tables and learning curves for cql-train runs and sweeps.")
    p.add_argument("paths", nargs="+", metavar="DIR", help="run dirs or sweep dirs, searched recursively")
    p.add_argument("--out", required=True, type=Path, metavar="OUTDIR", help="where to write the report")
    p.add_argument(
        "--group-by",
        metavar="KEYS",
        default=None,
        help="comma-separated config keys to group by, besides the task "
        "(default: the keys whose values differ between runs of a task)",
    )
    p.add_argument("--metric", default=SCORE_KEY, help=f"metric for curves.png (default: {SCORE_KEY})")
    p.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        default=None,
        help="probability of improvement P(A > B) of the final score; A and B are settings "
        "(KEY=VALUE[,KEY=VALUE], or a bare VALUE of the one grouping key) or run directories",
    )
    p.add_argument(
        "--curves",
        choices=CURVE_STATS,
        default="mean",
        help="learning curves as mean ± std over seeds (default) or IQM with a 95%% bootstrap band",
    )
    p.add_argument(
        "--format",
        default="png",
        metavar="FORMATS",
        help=f"figure formats, comma-separated from {', '.join(FORMATS)} (default: png)",
    )
    p.add_argument(
        "--reps", type=int, default=DEFAULT_REPS, help=f"bootstrap resamples per interval (default: {DEFAULT_REPS})"
    )
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the bootstrap (default: 0)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.reps < 100:
            raise ReportError(
                f"--reps {args.reps} is too few for a 95% interval; use at least 100 (default {DEFAULT_REPS})"
            )
        try:
            formats = parse_formats(args.format)
        except ValueError as exc:
            raise ReportError(str(exc)) from None
        options = ReportOptions(
            metric=args.metric,
            compare=args.compare,
            curves=args.curves,
            formats=formats,
            reps=args.reps,
            seed=args.seed,
        )
        outputs = make_report(args.paths, args.out, args.group_by, options)
    except ReportError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    print("wrote " + ", ".join(str(p) for p in outputs))
    return 0


@dataclass(frozen=True)
class ReportOptions:
    metric: str = SCORE_KEY
    compare: tuple[str, str] | None = None  # (A, B): the two --compare specs
    curves: str = "mean"
    formats: Sequence[str] = ("png",)
    reps: int = DEFAULT_REPS
    seed: int = DEFAULT_SEED


def make_report(
    paths: Sequence[str], out: Path, group_by: str | None, options: ReportOptions = ReportOptions()
) -> list[Path]:
    opt = options
    collection = collect(paths)
    for path, why in collection.skipped:
        _warn(f"skipping {path}: {why}")
    runs = collection.runs
    if not runs:
        raise ReportError(f"all {len(collection.skipped)} run dirs under {', '.join(paths)} are unreadable")
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out is not a directory: {out}")

    if group_by is None:
        varied = varied_keys(runs)
        keys = separating_keys(runs, varied)
        how = "detected" if keys == varied else f"detected; {len(varied) - len(keys)} more keys vary with these"
    else:
        keys, how = [k.strip() for k in group_by.split(",") if k.strip()], "--group-by"
        check_group_keys(runs, keys)
    groups = group_runs(runs, keys)
    # Resolved before anything is written, so a bad --compare leaves no half-written report.
    comparisons = compare(*opt.compare, runs, groups, opt.reps, opt.seed) if opt.compare else []

    stats = [row_stats(group_scores(g), opt.reps, opt.seed) for g in groups]
    across = [row_stats(s, opt.reps, opt.seed) for s in across_tasks(groups)]
    out.mkdir(parents=True, exist_ok=True)
    md, csv_path = out / "report.md", out / "report.csv"
    write_csv(groups, stats, across, csv_path)
    figures = plot_interval_estimates([*stats, *across], out / "interval_estimates", opt.formats)
    # The profile pools each setting over tasks where it ran on several, else shows each group.
    settings = [a.scores for a in across] or [s.scores for s in stats]
    figures += plot_performance_profile(settings, out / "performance_profile", opt.formats, opt.reps, opt.seed)
    drawn, written = plot_curves(groups, opt.metric, out / "curves", opt.formats, opt.curves, opt.reps, opt.seed)
    figures += written
    if not drawn:
        _warn(f"no run logged {opt.metric!r}; curves.png is empty (logged metrics: {_some(metric_names(runs))})")
    drawn, written = plot_q_values(groups, out / "q_values", opt.formats)
    figures += written
    if not drawn:
        _warn(f"no run logged {' or '.join(Q_METRICS)}; q_values.png is empty")
    outputs = [md, csv_path]
    if comparisons:
        outputs.append(out / "compare.csv")
        with outputs[-1].open("w", newline="", encoding="utf-8") as f:
            csv.writer(f, lineterminator="\n").writerows(compare_csv_rows(comparisons))
    grouped_by = f"{', '.join(keys)} ({how})" if keys else f"nothing else ({how}: no key varies)"
    sections = [*markdown_section([*stats, *across], keys, opt.reps), *compare_section(comparisons)]
    write_markdown(groups, collection, grouped_by, figures, md, sections)
    print(_overview(collection, len(groups), keys))
    return outputs + figures


def _overview(collection: Collection, n_groups: int, keys: Sequence[str]) -> str:
    runs = collection.runs
    counts = ", ".join(f"{sum(r.status == s for r in runs)} {s}" for s in ("completed", "running", "failed"))
    return (
        f"{len(runs)} runs ({counts}, {len(collection.skipped)} skipped) in {n_groups} groups; "
        f"grouped by task × {', '.join(keys) or 'nothing else'}"
    )


def _some(names: Sequence[str], limit: int = 12) -> str:
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "") if names else "none"


def _warn(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
