"""``cql-report``: summarize runs and sweeps from their local files (never wandb).

    cql-report DIR [DIR ...] --out OUTDIR [--group-by cql.tau,cql.alpha] [--metric eval/return]

Finds every run dir under the DIRs (a dir with config.yaml and metrics.jsonl or summary.json),
groups runs by task × the config keys that vary between them (or --group-by), and writes
OUTDIR/report.md, report.csv, curves.png and q_values.png. Unfinished and failed runs are
marked, unreadable ones skipped with a warning. User errors print one line and exit 2; the
last line printed names the output files.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cql_runner.report.aggregate import check_group_keys, group_runs, metric_names, varied_keys
from cql_runner.report.collect_runs import SCORE_KEY, Collection, ReportError, collect
from cql_runner.report.render import Q_METRICS, plot_curves, plot_q_values, write_csv, write_markdown

PROG = "cql-report"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Tables and learning curves for cql-train runs and sweeps.")
    p.add_argument("paths", nargs="+", metavar="DIR", help="run dirs or sweep dirs, searched recursively")
    p.add_argument("--out", required=True, type=Path, metavar="OUTDIR", help="where to write the report")
    p.add_argument("--group-by", metavar="KEYS", default=None,
                   help="comma-separated config keys to group by, besides the task "
                        "(default: the keys whose values differ between runs of a task)")
    p.add_argument("--metric", default=SCORE_KEY, help=f"metric for curves.png (default: {SCORE_KEY})")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        outputs = make_report(args.paths, args.out, args.group_by, args.metric)
    except ReportError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    print("wrote " + ", ".join(str(p) for p in outputs))
    return 0


def make_report(paths: Sequence[str], out: Path, group_by: str | None, metric: str) -> list[Path]:
    collection = collect(paths)
    for path, why in collection.skipped:
        _warn(f"skipping {path}: {why}")
    runs = collection.runs
    if not runs:
        raise ReportError(f"all {len(collection.skipped)} run dirs under {', '.join(paths)} are unreadable")
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out is not a directory: {out}")

    if group_by is None:
        keys, how = varied_keys(runs), "detected"
    else:
        keys, how = [k.strip() for k in group_by.split(",") if k.strip()], "--group-by"
        check_group_keys(runs, keys)
    groups = group_runs(runs, keys)

    out.mkdir(parents=True, exist_ok=True)
    outputs = [out / "report.md", out / "report.csv", out / "curves.png", out / "q_values.png"]
    write_csv(groups, outputs[1])
    if not plot_curves(groups, metric, outputs[2]):
        _warn(f"no run logged {metric!r}; curves.png is empty (logged metrics: {_some(metric_names(runs))})")
    if not plot_q_values(groups, outputs[3]):
        _warn(f"no run logged {' or '.join(Q_METRICS)}; q_values.png is empty")
    grouped_by = f"{', '.join(keys)} ({how})" if keys else f"nothing else ({how}: no key varies)"
    write_markdown(groups, collection, grouped_by, outputs[2:], outputs[0])
    print(_overview(collection, len(groups), keys))
    return outputs


def _overview(collection: Collection, n_groups: int, keys: Sequence[str]) -> str:
    runs = collection.runs
    counts = ", ".join(f"{sum(r.status == s for r in runs)} {s}" for s in ("completed", "running", "failed"))
    return (f"{len(runs)} runs ({counts}, {len(collection.skipped)} skipped) in {n_groups} groups; "
            f"grouped by task × {', '.join(keys) or 'nothing else'}")


def _some(names: Sequence[str], limit: int = 12) -> str:
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "") if names else "none"


def _warn(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
