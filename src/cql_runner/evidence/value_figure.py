"""A bar chart of the lower-bound check: Q̂(s0, π(s0)) next to the Monte-Carlo return, per dataset and method.

cql-report's Q-value curves show the estimates over training; this shows the one comparison the paper's
claim is about, for the final policies. The y-axis is symlog because offline SAC's estimates can be orders
of magnitude above everything else, which on a linear axis would flatten the other bars to nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cql_runner.evidence.gather_runs import Cell

BARS = (("q_hat_s0", "Q̂(s0, π(s0)), min over critics"), ("mc_return_s0", "Monte-Carlo return from s0"))


def plot_value_check(by_dataset: dict[str, dict[str, Cell]], path: Path) -> bool:
    """One panel per dataset; False (and an empty figure) when no run has a value check yet."""
    datasets = [d for d, cells in by_dataset.items() if any(c.checks for c in cells.values())]
    fig = Figure(figsize=(6.0 * max(len(datasets), 1), 4.2))
    FigureCanvasAgg(fig)
    for i, dataset in enumerate(datasets):
        ax = fig.add_subplot(1, len(datasets), i + 1)
        cells = [c for c in by_dataset[dataset].values() if c.checks]
        x = np.arange(len(cells))
        for j, (key, label) in enumerate(BARS):
            stats = [c.check_stat(key) for c in cells]
            means = [s.mean if s.mean is not None else np.nan for s in stats]
            ax.bar(x + (j - 0.5) * 0.4, means, 0.4, yerr=[s.std for s in stats], label=label, color=f"C{j}", capsize=3)
        ax.set_xticks(x, [c.method for c in cells])
        ax.set_yscale("symlog")
        ax.set_title(dataset)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize="small")
    fig.suptitle("Lower-bound check, final policies: mean ± std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    return bool(datasets)
