"""Write the report: report.md (rounded, for people), report.csv (full precision), and figures."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, ScalarFormatter

from cql_runner.report.aggregate import Group, Stat, curve, format_value
from cql_runner.report.collect_runs import Collection, eval_scores
from cql_runner.report.figure_io import save_figure
from cql_runner.report.group_stats import RowStats
from cql_runner.report.stat_tables import csv_cells, csv_header
from cql_runner.report.statistics import iqm_curve

Q_METRICS = ("q/data", "q/policy", "q/dataset_mc_return")
Q_STYLES = ("-", "--", ":")
# Beyond this ratio of largest to smallest |Q| on one axis (offline SAC diverging) the axis goes symlog,
# so the conservative runs stay readable beside the blow-up.
SYMLOG_SPAN = 100.0
# A learning curve that peaks beyond this multiple of the typical setting's peak (offline SAC finding a
# policy far past the dataset's expert reference) puts its subplot on a symlog axis, linear up to the
# typical peak, so the other settings are not flattened against zero.
CURVE_OUTLIER_SPAN = 5.0


def write_csv(groups: Sequence[Group], stats: Sequence[RowStats], across: Sequence[RowStats], path: Path) -> None:
    """One row per group (``stats`` in the same order), then one per setting aggregated over tasks
    (task "all tasks"; the run-count and std columns empty)."""
    keys = [*groups[0].keys] if groups else []
    header = [
        "task",
        *keys,
        "n_runs",
        "n_completed",
        "n_running",
        "n_failed",
        "seeds",
        "final_mean",
        "final_std",
        "final_n",
        "best_mean",
        "best_std",
        "best_n",
    ]
    header += [h for h in csv_header() if h not in header]
    rows: list[dict[str, object]] = []
    for g, st in zip(groups, stats):
        row: dict[str, object] = {
            "task": g.task,
            **{k: format_value(v) for k, v in zip(keys, g.values)},
            "n_runs": len(g.runs),
            "n_completed": g.count("completed"),
            "n_running": g.count("running"),
            "n_failed": g.count("failed"),
            "seeds": " ".join(format_value(s) for s in g.seeds),
        }
        row |= dict(zip(csv_header(), csv_cells(st)))
        row |= dict(zip(("final_mean", "final_std", "final_n"), _stat_cells(g.final)))
        row |= dict(zip(("best_mean", "best_std", "best_n"), _stat_cells(g.best)))
        rows.append(row)
    for st in across:
        rows.append(
            {
                "task": st.scores.task,
                **{k: format_value(v) for k, v in zip(keys, st.scores.values)},
                **dict(zip(csv_header(), csv_cells(st))),
                "final_n": st.scores.n,
                "best_n": st.scores.n,
            }
        )
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([row.get(h, "") for h in header] for row in rows)


def _stat_cells(stat: Stat) -> list[object]:
    # repr() of a float round-trips exactly: the csv is for analysis, so nothing is rounded.
    return ["" if stat.mean is None else repr(stat.mean), "" if stat.mean is None else repr(stat.std), stat.n]


def write_markdown(
    groups: Sequence[Group],
    collection: Collection,
    grouped_by: str,
    figures: Sequence[Path],
    path: Path,
    sections: Sequence[str] = (),
) -> None:
    """The table of mean ± std, then ``sections`` (interval estimates, comparisons), notes and figures."""
    runs = collection.runs
    keys = list(groups[0].keys) if groups else []
    counts = {s: sum(r.status == s for r in runs) for s in ("completed", "running", "failed")}
    lines = [
        "# CQL report",
        "",
        f"{len(runs)} runs ({counts['completed']} completed, {counts['running']} running, "
        f"{counts['failed']} failed), {len(collection.skipped)} skipped, "
        f"{len({r.task for r in runs})} task(s). Grouped by task × {grouped_by}.",
        "",
        _row(["task", *keys, "n", "final normalized score", "best normalized score", "runs"]),
        _row(["---"] * (len(keys) + 5)),
    ]
    for g in groups:
        running = g.count("running")
        mark = f" ({running} running)" if running else ""
        lines.append(
            _row(
                [
                    g.task,
                    *(format_value(v) for v in g.values),
                    str(g.final.n),
                    _fmt(g.final) + mark,
                    _fmt(g.best) + mark,
                    _status_text(g),
                ]
            )
        )
    lines += [
        *sections,
        "",
        *_notes(),
        *_unfinished(collection),
        *_skipped(collection),
        "",
        "Figures: " + ", ".join(f"[{p.name}]({p.name})" for p in figures),
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


def _notes() -> list[str]:
    return [
        "Notes:",
        "- mean ± std over seeds; std is the sample std (ddof=1) when n ≥ 2, and 0 when n = 1. "
        "n counts the runs with a score.",
        "- final: a finished run's `final_normalized_score` from summary.json. A running run (no summary.json "
        "yet, or one left by an interruption) contributes its last logged `eval/normalized_score`, and best "
        'the highest so far; such rows are marked "(k running)".',
        "- failed runs are counted in the runs column but left out of the means.",
        "- scores rounded to 1 decimal here; report.csv has full precision.",
    ]


def _unfinished(collection: Collection) -> list[str]:
    rows = [r for r in collection.runs if r.status != "completed"]
    if not rows:
        return []
    lines = ["", "## Runs not completed", "", _row(["run", "status", "step", "error"]), _row(["---"] * 4)]
    for r in rows:
        total = r.config.get("train.steps")
        step = f"{r.last_step if r.last_step is not None else 0}" + (f"/{total}" if total is not None else "")
        lines.append(_row([str(r.path), r.status, step, r.error or ""]))
    return lines


def _skipped(collection: Collection) -> list[str]:
    if not collection.skipped:
        return []
    lines = ["", "## Skipped runs (unreadable files)", "", _row(["run", "reason"]), _row(["---"] * 2)]
    return lines + [_row([str(path), why]) for path, why in collection.skipped]


def _fmt(stat: Stat) -> str:
    return "–" if stat.mean is None else f"{stat.mean:.1f} ± {stat.std:.1f}"


def _status_text(g: Group) -> str:
    parts = [f"{g.count(s)} {s}" for s in ("completed", "running", "failed") if g.count(s)]
    return ", ".join(parts)


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def _task_axes(fig: Figure, tasks: Sequence[str]) -> dict[str, Axes]:
    ncols = min(len(tasks), 3)
    nrows = math.ceil(len(tasks) / ncols)
    fig.set_size_inches(6.0 * ncols, 4.2 * nrows)
    return {t: fig.add_subplot(nrows, ncols, i + 1) for i, t in enumerate(tasks)}


CURVE_STATS = ("mean", "iqm")
# Drawn where a fine-tuning run's online phase starts (its curves share one step axis: offline
# update steps, then train.steps + env steps).
SWITCH_LINESTYLE: Literal[":"] = ":"
SWITCH_LINEWIDTH = 1.2


def online_switch(group: Group) -> int | None:
    """The step at which a group's online phase starts (its ``train.steps``); None when its runs
    have no online phase or start it at different steps."""
    starts = {int(r.config.get("train.steps") or 0) for r in group.runs if (r.config.get("online.steps") or 0) > 0}
    return starts.pop() if len(starts) == 1 else None


def plot_curves(
    groups: Sequence[Group],
    metric: str,
    path: Path,
    formats: Sequence[str] = ("png",),
    stat: str = "mean",
    reps: int = 1000,
    seed: int = 0,
) -> tuple[bool, list[Path]]:
    """``metric`` per setting over seeds, one subplot per task: mean ± std, or (``stat="iqm"``) the IQM
    with a 95% bootstrap band. Returns (anything drawn, files written)."""
    fig = Figure()
    tasks = sorted({g.task for g in groups})
    axes = _task_axes(fig, tasks)
    drawn = False
    for task, ax in axes.items():
        peaks: list[float] = []
        lowest = 0.0
        switched = False
        for i, g in enumerate(g for g in groups if g.task == task):
            band = _curve_band(g, metric, stat, reps, seed)
            if band is None:
                continue
            steps, centre, low, high = band
            color = f"C{i % 10}"
            ax.plot(steps, centre, color=color, marker="o", markersize=3, label=g.label())
            ax.fill_between(steps, low, high, color=color, alpha=0.2, linewidth=0)
            switch = online_switch(g)
            if switch is not None:
                ax.axvline(switch, color=color, linestyle=SWITCH_LINESTYLE, linewidth=SWITCH_LINEWIDTH)
                switched = True
            finite = [float(v) for v in centre if math.isfinite(v)]
            peaks.append(max((abs(v) for v in finite), default=0.0))
            lowest = min([lowest, *finite])
            drawn = True
        linear_up_to = outlier_symlog_threshold(peaks)
        if linear_up_to is not None:
            _symlog_linear_below(ax, linear_up_to, lowest, max(peaks))
        _decorate(
            ax,
            task,
            metric,
            [
                Line2D(
                    [],
                    [],
                    color="gray",
                    label="offline → online",
                    linestyle=SWITCH_LINESTYLE,
                    linewidth=SWITCH_LINEWIDTH,
                )
            ]
            if switched
            else [],
        )
    how = "mean ± std" if stat == "mean" else "IQM with 95% bootstrap band"
    fig.suptitle(f"{metric}: {how} over seeds")
    return drawn, save_figure(fig, path, formats)


def _curve_band(
    group: Group, metric: str, stat: str, reps: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(steps, centre, band low, band high) of one setting's curve, or None when nothing was logged."""
    if stat == "mean":
        c = curve(group.runs, metric)
        return None if c is None else (c.steps, c.mean, c.mean - c.std, c.mean + c.std)
    per_step: dict[int, list[float]] = defaultdict(list)
    for run in group.runs:
        for step, value in eval_scores(run, metric):
            per_step[step].append(value)
    if not per_step:
        return None
    b = iqm_curve(per_step, reps=reps, seed=seed)
    # No band where only one run reached the step: the band collapses onto the point.
    return b.steps, b.iqm, np.where(np.isnan(b.low), b.iqm, b.low), np.where(np.isnan(b.high), b.iqm, b.high)


def outlier_symlog_threshold(peaks: Sequence[float]) -> float | None:
    """The linear range of a symlog axis when one curve's peak |value| dwarfs the median peak, else None."""
    if len(peaks) < 2:
        return None
    typical = sorted(peaks)[(len(peaks) - 1) // 2]  # the lower median: an outlier pair cannot set it
    if typical <= 0 or max(peaks) <= CURVE_OUTLIER_SPAN * typical:
        return None
    return typical


def _symlog_linear_below(ax: Axes, linear_up_to: float, lowest: float, top: float) -> None:
    """A symlog y-axis whose linear part (up to ``linear_up_to``) gets most of the height."""
    ax.set_yscale("symlog", linthresh=linear_up_to, linscale=3.0)
    # The outlier's std band may not drag the axis down.
    ax.set_ylim(bottom=lowest - 0.05 * linear_up_to)
    # Symlog's default ticks are decades, which hide that the lower part is linear.
    ticks = [float(t) for t in MaxNLocator(4).tick_values(min(lowest, 0.0), linear_up_to) if t <= linear_up_to]
    decade = 10 ** math.ceil(math.log10(linear_up_to * 2.0))
    while decade <= top * 1.5:
        ticks.append(float(decade))
        decade *= 10
    ax.set_yticks(ticks)
    ax.yaxis.set_major_formatter(ScalarFormatter())


def plot_q_values(groups: Sequence[Group], path: Path, formats: Sequence[str] = ("png",)) -> tuple[bool, list[Path]]:
    """q/data (solid), q/policy (dashed) and the dataset's Monte-Carlo return (dotted) per setting, mean over
    seeds: a conservative critic keeps its Q at or below the Monte-Carlo line."""
    fig = Figure()
    axes = _task_axes(fig, sorted({g.task for g in groups}))
    # One legend entry per setting (its colour) plus one per line style, instead of settings × metrics.
    styles = [
        Line2D([], [], color="black", linestyle=ls, label=m)  # type: ignore[arg-type]  # Q_STYLES
        for m, ls in zip(Q_METRICS, Q_STYLES)
    ]
    drawn = False
    for task, ax in axes.items():
        magnitudes: list[float] = []
        for i, g in enumerate(g for g in groups if g.task == task):
            for metric, style in zip(Q_METRICS, Q_STYLES):
                c = curve(g.runs, metric)
                if c is not None:
                    label = g.label() if metric == Q_METRICS[0] else "_nolegend_"
                    ax.plot(c.steps, c.mean, color=f"C{i % 10}", linestyle=style, label=label)
                    magnitudes.extend(abs(float(v)) for v in c.mean if math.isfinite(v) and v != 0)
                    drawn = True
        if magnitudes and max(magnitudes) > SYMLOG_SPAN * max(min(magnitudes), 1.0):
            ax.set_yscale("symlog")
        _decorate(ax, task, "Q-value", styles)
    fig.suptitle("Q-values, mean over seeds")
    return drawn, save_figure(fig, path, formats)


def _decorate(ax: Axes, task: str, ylabel: str, extra_handles: Sequence[Line2D] = ()) -> None:
    ax.set_title(task)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles=[*handles, *extra_handles], fontsize="small")
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="gray")
