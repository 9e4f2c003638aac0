"""The fine-tuning section of RESULTS.md: its table (finetune_table's numbers over seeds) and its curves.

A cell belongs here when its runs logged an online phase, whatever its method is called, so
``cql-evidence results`` finds fine-tuning runs by what they wrote.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from cql_runner.evidence.finetune_table import (
    DIP_WINDOW,
    SeedNumbers,
    has_online_phase,
    online_curve,
    online_steps_of,
    seed_numbers,
)
from cql_runner.evidence.gather_runs import Cell
from cql_runner.evidence.markdown import table
from cql_runner.report.aggregate import Stat, mean_std
from cql_runner.report.figure_io import save_figure
from cql_runner.report.stat_tables import fmt_estimate
from cql_runner.report.statistics import DEFAULT_REPS, DEFAULT_SEED, aggregate_estimates


def finetune_cells(cells: Sequence[Cell]) -> list[Cell]:
    return [c for c in cells if any(has_online_phase(r.metrics) for r in c.runs)]


def cell_numbers(cell: Cell) -> list[SeedNumbers]:
    """One SeedNumbers per run (seed) of the cell."""
    return [seed_numbers(r.metrics, online_steps_of(r.config, r.metrics)) for r in cell.runs]


def _fmt(stat: Stat, digits: int = 1) -> str:
    return "–" if stat.mean is None else f"{stat.mean:.{digits}f} ± {stat.std:.{digits}f}"


def _iqm_final(numbers: Sequence[SeedNumbers]) -> str:
    finals = [n.final for n in numbers if n.final is not None]
    if not finals:
        return "–"
    return fmt_estimate(aggregate_estimates(np.array(finals), reps=DEFAULT_REPS, seed=DEFAULT_SEED)["iqm"])


def table_rows(cells: Sequence[Cell]) -> list[list[str]]:
    rows = []
    for c in cells:
        nums = cell_numbers(c)
        pre, dip = mean_std(n.pre_switch for n in nums), mean_std(n.dip for n in nums)
        drops = [n.pre_switch - n.dip for n in nums if n.pre_switch is not None and n.dip is not None]
        rows.append(
            [
                c.dataset,
                c.method,
                str(len(nums)),
                _fmt(pre),
                _fmt(dip),
                _fmt(mean_std(drops)),
                _fmt(mean_std(n.final for n in nums)),
                _iqm_final(nums),
                _fmt(mean_std(n.regret for n in nums), 3),
            ]
        )
    return rows


def budget_line(plan: dict[str, Any]) -> str:
    online = plan.get("online_steps")
    every = plan.get("online_eval_every")
    return (
        f"Budget: {plan.get('train_steps')} offline gradient steps, then {online} online env steps "
        f"(`online.utd=1`: one update per env step, `online.offline_ratio` at its default, half of each batch "
        f"from the dataset); online SAC from scratch gets the same {online} env steps and no offline steps. "
        f"These runs evaluate every {every} steps of either phase on {plan.get('eval_episodes')} episodes; "
        f"seeds {plan.get('seeds')} side by side in one process per method, one torch thread."
    )


def finetune_lines(cells: Sequence[Cell], plan: dict[str, Any], figure: Path | None, docs: Path) -> list[str]:
    """Markdown of the fine-tuning section; empty when no cell has an online phase."""
    if not cells:
        return []
    lines = [
        "## Offline-to-online fine-tuning",
        "",
        budget_line(plan) if plan.get("online_steps") else "",
        "",
        "Per method, mean ± std (ddof = 1) over seeds of normalized scores:",
        "",
        "- **pre-switch**: the last evaluation of offline pre-training (none for online SAC from scratch);",
        f"- **dip**: the lowest evaluation in the first {DIP_WINDOW:.0%} of the online env steps "
        "(– when no evaluation falls there: make the evaluation interval at most that long); "
        "**drop** = pre-switch − dip per seed, positive when fine-tuning first lost score;",
        "- **final**: the last online evaluation, with its interquartile mean and 95% bootstrap CI (rliable; "
        "with 3 seeds or fewer the IQM equals the mean);",
        "- **cumulative regret**: the mean over all online evaluations of (1 − normalized score / 100), as "
        "Cal-QL and CORL define it: 0 is expert-level from the first online evaluation on, 1 random-level; "
        "lower is better, and it rewards fine-tuning that never dips.",
        "",
        *table(
            [
                "dataset",
                "method",
                "seeds",
                "pre-switch",
                f"dip (first {DIP_WINDOW:.0%})",
                "drop",
                "final",
                "final IQM [95% CI]",
                "cumulative regret",
            ],
            table_rows(cells),
        ),
        *reading_lines(cells),
    ]
    if figure is not None:
        lines += [
            "Normalized score against env steps of the online phase (seed mean ± std band); env step 0, the "
            "dotted line, is the end of offline pre-training and carries the pre-switch evaluation.",
            "",
            f"![Fine-tuning curves]({figure.relative_to(docs).as_posix()})",
            "",
        ]
    return lines


# A dip smaller than this many normalized points is evaluation noise, however alike the seeds are.
NO_CHANGE_POINTS = 1.0


def reading_lines(cells: Sequence[Cell]) -> list[str]:
    """Generated sentences from the table: per dataset the regret ranking, and per fine-tuned method
    whether the score fell from the switch to the dip by more than the seeds' spread."""
    lines = []
    for dataset in dict.fromkeys(c.dataset for c in cells):
        here = [(c, cell_numbers(c)) for c in cells if c.dataset == dataset]
        regrets = [(mean_std(n.regret for n in nums), c.method) for c, nums in here]
        ranked = sorted((s.mean, s.std, m) for s, m in regrets if s.mean is not None)
        if ranked:
            order = ", ".join(f"{m} {mean:.3f} ± {std:.3f}" for mean, std, m in ranked)
            lines.append(f"- **{dataset}**: lowest cumulative regret: **{ranked[0][2]}** (ranking: {order}).")
        for c, nums in here:
            drops = mean_std(n.pre_switch - n.dip for n in nums if n.pre_switch is not None and n.dip is not None)
            if drops.mean is None:
                continue
            if abs(drops.mean) <= max(drops.std, NO_CHANGE_POINTS):
                what = "changed by no more than the spread over seeds (or 1 point)"
            else:
                what = "fell" if drops.mean > 0 else "rose"
            lines.append(
                f"  - {c.method}: from the switch to the dip the score {what} "
                f"({-drops.mean:+.1f} ± {drops.std:.1f} points, {drops.n} seeds)."
            )
    if not lines:
        return []
    return [
        "What the table says (generated from it; a change within one std over seeds, or within "
        f"{NO_CHANGE_POINTS:g} normalized point, is called no change):",
        "",
        *lines,
        "",
    ]


def plot_finetune(cells: Sequence[Cell], path: Path) -> Path:
    """One panel per dataset, one line per method: the online phase on an env-step axis."""
    datasets = list(dict.fromkeys(c.dataset for c in cells))
    fig = Figure(figsize=(5.5 * len(datasets), 4.0))
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    for ax, dataset in zip(axes, datasets, strict=True):
        for c in (c for c in cells if c.dataset == dataset):
            curve = online_curve([r.metrics for r in c.runs])
            if not len(curve.env_steps):
                continue
            (line,) = ax.plot(curve.env_steps, curve.mean, marker=".", label=c.method)
            low, high = curve.mean - curve.std, curve.mean + curve.std
            ax.fill_between(curve.env_steps, low, high, alpha=0.2, color=line.get_color())
        ax.axvline(0.0, color="grey", linestyle=":", label="offline end")
        ax.set_title(dataset)
        ax.set_xlabel("online env steps")
        ax.set_ylabel("normalized score")
        ax.legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)
    return path
