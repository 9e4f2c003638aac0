"""Write the report: report.md (rounded, for people), report.csv (full precision), and figures."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg  # headless: no display, no pyplot state
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, ScalarFormatter

from cql_runner.report.aggregate import Group, Stat, curve, format_value
from cql_runner.report.collect_runs import Collection

Q_METRICS = ("q/data", "q/policy", "q/dataset_mc_return")
Q_STYLES = ("-", "--", ":")
# Beyond this ratio of largest to smallest |Q| on one axis (offline SAC diverging) the axis goes symlog,
# so the conservative runs stay readable beside the blow-up.
SYMLOG_SPAN = 100.0
# A learning curve that peaks beyond this multiple of the typical setting's peak (offline SAC finding a
# policy far past the dataset's expert reference) puts its subplot on a symlog axis, linear up to the
# typical peak, so the other settings are not flattened against zero.
CURVE_OUTLIER_SPAN = 5.0


def write_csv(groups: Sequence[Group], path: Path) -> None:
    keys = list(groups[0].keys) if groups else []
    header = ["task", *keys, "n_runs", "n_completed", "n_running", "n_failed", "seeds",
              "final_mean", "final_std", "final_n", "best_mean", "best_std", "best_n"]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        for g in groups:
            final, best = g.final, g.best
            writer.writerow([g.task, *(format_value(v) for v in g.values), len(g.runs), g.count("completed"),
                             g.count("running"), g.count("failed"), " ".join(format_value(s) for s in g.seeds),
                             *_stat_cells(final), *_stat_cells(best)])


def _stat_cells(stat: Stat) -> list[object]:
    # repr() of a float round-trips exactly: the csv is for analysis, so nothing is rounded.
    return ["" if stat.mean is None else repr(stat.mean), "" if stat.mean is None else repr(stat.std), stat.n]


def write_markdown(groups: Sequence[Group], collection: Collection, grouped_by: str, figures: Sequence[Path],
                   path: Path) -> None:
    runs = collection.runs
    keys = list(groups[0].keys) if groups else []
    counts = {s: sum(r.status == s for r in runs) for s in ("completed", "running", "failed")}
    lines = [
        "# CQL report", "",
        f"{len(runs)} runs ({counts['completed']} completed, {counts['running']} running, "
        f"{counts['failed']} failed), {len(collection.skipped)} skipped, "
        f"{len({r.task for r in runs})} task(s). Grouped by task × {grouped_by}.", "",
        _row(["task", *keys, "n", "final normalized score", "best normalized score", "runs"]),
        _row(["---"] * (len(keys) + 5)),
    ]
    for g in groups:
        running = g.count("running")
        mark = f" ({running} running)" if running else ""
        lines.append(_row([g.task, *(format_value(v) for v in g.values), str(g.final.n),
                           _fmt(g.final) + mark, _fmt(g.best) + mark, _status_text(g)]))
    lines += ["", *_notes(), *_unfinished(collection), *_skipped(collection), "",
              "Figures: " + ", ".join(f"[{p.name}]({p.name})" for p in figures), ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def _notes() -> list[str]:
    return [
        "Notes:",
        "- mean ± std over seeds; std is the sample std (ddof=1) when n ≥ 2, and 0 when n = 1. "
        "n counts the runs with a score.",
        "- final: a finished run's `final_normalized_score` from summary.json. A running run (no summary.json "
        "yet, or one left by an interruption) contributes its last logged `eval/normalized_score`, and best "
        "the highest so far; such rows are marked \"(k running)\".",
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


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    # No Software/date metadata, so the same runs give the same file.
    fig.savefig(path, dpi=110, metadata={"Software": None})


def plot_curves(groups: Sequence[Group], metric: str, path: Path) -> bool:
    """Mean ± std over seeds of ``metric`` per setting, one subplot per task. False if nothing was logged."""
    fig = Figure()
    tasks = sorted({g.task for g in groups})
    axes = _task_axes(fig, tasks)
    drawn = False
    for task, ax in axes.items():
        peaks: list[float] = []
        lowest = 0.0
        for i, g in enumerate(g for g in groups if g.task == task):
            c = curve(g.runs, metric)
            if c is None:
                continue
            color = f"C{i % 10}"
            ax.plot(c.steps, c.mean, color=color, marker="o", markersize=3, label=g.label())
            ax.fill_between(c.steps, c.mean - c.std, c.mean + c.std, color=color, alpha=0.2, linewidth=0)
            finite = [float(v) for v in c.mean if math.isfinite(v)]
            peaks.append(max((abs(v) for v in finite), default=0.0))
            lowest = min([lowest, *finite])
            drawn = True
        linear_up_to = outlier_symlog_threshold(peaks)
        if linear_up_to is not None:
            _symlog_linear_below(ax, linear_up_to, lowest, max(peaks))
        _decorate(ax, task, metric)
    fig.suptitle(f"{metric}: mean ± std over seeds")
    _save(fig, path)
    return drawn


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


def plot_q_values(groups: Sequence[Group], path: Path) -> bool:
    """q/data (solid), q/policy (dashed) and the dataset's Monte-Carlo return (dotted) per setting, mean over
    seeds: a conservative critic keeps its Q at or below the Monte-Carlo line."""
    fig = Figure()
    axes = _task_axes(fig, sorted({g.task for g in groups}))
    # One legend entry per setting (its colour) plus one per line style, instead of settings × metrics.
    styles = [Line2D([], [], color="black", linestyle=ls, label=m) for m, ls in zip(Q_METRICS, Q_STYLES)]
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
    _save(fig, path)
    return drawn


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
