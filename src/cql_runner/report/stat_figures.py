"""The interval-estimates and performance-profile figures, drawn by rliable's own plotting functions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np
from matplotlib.figure import Figure

from cql_runner.report.figure_io import save_figure
from cql_runner.report.group_stats import RowStats, Scores
from cql_runner.report.statistics import CONFIDENCE, ESTIMATORS, TITLES, Estimate, performance_profiles

PROFILE_THRESHOLDS = 101


def plot_interval_estimates(rows: Sequence[RowStats], path: Path, formats: Sequence[str]) -> list[Path]:
    """Mean, median, IQM and optimality gap of the final score with CIs, one row per group or setting.
    A row with one run is drawn as its point estimate only (a zero-width interval)."""
    from matplotlib import pyplot as plt
    from rliable import plot_utils

    rows = [r for r in rows if r.final is not None]
    finals = [cast(dict[str, Estimate], r.final) for r in rows]  # not None, as filtered
    if not rows:
        fig = Figure(figsize=(6, 2))
        fig.text(0.5, 0.5, "no scored runs", ha="center", va="center", color="gray")
        return save_figure(fig, path, formats)
    labels = [_label(r.scores) for r in rows]
    points = {lab: np.array([f[n].value for n in ESTIMATORS]) for lab, f in zip(labels, finals)}
    intervals = {
        lab: np.array([[_low(r, n) for n in ESTIMATORS], [_high(r, n) for n in ESTIMATORS]])
        for lab, r in zip(labels, rows)
    }
    fig, _ = plot_utils.plot_interval_estimates(
        points,
        intervals,
        metric_names=[TITLES[n] for n in ESTIMATORS],
        algorithms=labels,
        xlabel="",
        subfigure_width=4.2,
        row_height=0.6,
        wspace=0.3,
    )
    # rliable places its x label at a fixed offset that collides with the ticks of a short figure.
    fig.supxlabel(f"Final normalized score ({round(CONFIDENCE * 100)}% CI)", fontsize="x-large", y=-0.45)
    try:
        return save_figure(fig, path, formats, tight=True)
    finally:
        plt.close(fig)


def _low(r: RowStats, name: str) -> float:
    e = r.final[name]  # type: ignore[index]
    return e.value if e.low is None else e.low


def _high(r: RowStats, name: str) -> float:
    e = r.final[name]  # type: ignore[index]
    return e.value if e.high is None else e.high


def _label(s: Scores) -> str:
    return f"{s.label} (n={s.n})" if s.n > 1 else f"{s.label} (n = 1, no interval)"


def plot_performance_profile(
    settings: Sequence[Scores], path: Path, formats: Sequence[str], reps: int, seed: int
) -> list[Path]:
    """Fraction of runs whose final normalized score exceeds each threshold, per setting, with 95% bands."""
    from rliable import plot_utils

    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.add_subplot(1, 1, 1)
    scored = [s for s in settings if s.n > 0]
    if not scored:
        ax.text(0.5, 0.5, "no scored runs", ha="center", va="center", transform=ax.transAxes, color="gray")
        return save_figure(fig, path, formats)
    every = np.concatenate([s.final.ravel() for s in scored])
    taus = np.linspace(min(0.0, float(every.min())), max(100.0, float(every.max())), PROFILE_THRESHOLDS)
    profiles = performance_profiles({_label(s): s.final for s in scored}, taus, reps=reps, seed=seed)
    colors = {name: f"C{i % 10}" for i, name in enumerate(profiles)}
    plot_utils.plot_performance_profiles(
        {k: p.fraction for k, p in profiles.items()},
        taus,
        performance_profile_cis={k: (p.low, p.high) for k, p in profiles.items() if p.low is not None},
        ax=ax,
        colors=colors,
        xlabel=r"Final normalized score ($\tau$)",
        ylabel=r"Fraction of runs with score $> \tau$",
        labelsize="medium",
        ticklabelsize="medium",
    )
    ax.legend(fontsize="small", loc="upper right")
    ax.set_title(f"Performance profile ({round(CONFIDENCE * 100)}% stratified bootstrap bands)")
    return save_figure(fig, path, formats)
