"""Ours against the peers: each of our cells beside the peer cell it is meant to match, on the same
dataset, seeds, budget and evaluation, with the statistics that say whether a gap is more than noise.

Which cells pair up is decided here, once (``PEER_PAIRS``). The probability of improvement and its
interval are rliable's (through ``cql_runner.report.statistics``); the permutation test is scipy's,
exact whenever the seeds' splits can all be enumerated, so a p-value is never a coin-flip estimate
at the seed counts a suite runs. A tie, not a win, is what 'at least the peer's mean' cannot tell
apart from noise: the table gives the smallest p-value the seed counts allow, so a reader sees when
no result could have been significant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import stats

from cql_runner.evidence.gather_runs import Cell
from cql_runner.evidence.markdown import table
from cql_runner.report.group_stats import group_scores
from cql_runner.report.statistics import DEFAULT_REPS, DEFAULT_SEED, Estimate, probability_of_improvement

# Enumerate every split of the pooled seeds up to this many (10 + 10 seeds: 184,756 splits); beyond, draw this many.
EXACT_SPLITS = 200_000
RANDOM_SPLITS = 20_000
SIGNIFICANCE = 0.05


@dataclass(frozen=True)
class PeerPair:
    ours: str
    peer: str
    # What makes the two comparable, in the words of the page.
    settings: str


PEER_PAIRS: tuple[PeerPair, ...] = (
    PeerPair("cql-as-d3rlpy", "d3rlpy-cql", "equivalent settings (README conversion table)"),
    PeerPair("cql-default", "d3rlpy-cql", "each tool's defaults"),
    PeerPair("bc", "d3rlpy-bc", "each tool's BC"),
)


@dataclass(frozen=True)
class ParityTest:
    """Final scores of our cell (x) against the peer's (y)."""

    difference: float  # mean(x) − mean(y)
    p_value: float  # two-sided permutation test of the difference of means
    smallest_p: float  # the smallest two-sided p-value any outcome could give with these seed counts
    exact: bool  # every split enumerated
    improvement: Estimate  # P(a seed of ours beats a seed of the peer's), rliable, with its 95% CI

    @property
    def verdict(self) -> str:
        if self.difference >= 0:
            return "at least the peer's mean"
        if self.p_value >= SIGNIFICANCE:
            return "below the peer's mean, within noise"
        return "below the peer's mean"


def parity_test(
    ours: np.ndarray | Sequence[float], peer: np.ndarray | Sequence[float], seed: int = DEFAULT_SEED
) -> ParityTest:
    """The difference of mean final scores, its two-sided permutation p-value and P(ours > peer).

    Needs at least one score on each side; with one score a side the permutation p is 1 by construction.
    """
    x, y = np.asarray(ours, dtype=float), np.asarray(peer, dtype=float)
    if not len(x) or not len(y):
        raise ValueError("a parity test needs at least one score on each side")
    splits = math.comb(len(x) + len(y), len(x))
    exact = splits <= EXACT_SPLITS
    test = stats.permutation_test(
        (x, y),
        lambda a, b, axis: np.mean(a, axis=axis) - np.mean(b, axis=axis),
        permutation_type="independent",
        alternative="two-sided",
        vectorized=True,
        n_resamples=EXACT_SPLITS if exact else RANDOM_SPLITS,
        rng=np.random.default_rng(seed),
    )
    # scipy's two-sided p is twice the smaller one-sided p, and a one-sided p counts the observed split
    # itself, so no outcome gets below 2 / (number of splits).
    smallest = min(1.0, 2.0 / splits)
    improvement = probability_of_improvement(x, y, reps=DEFAULT_REPS, seed=seed)
    return ParityTest(float(x.mean() - y.mean()), float(test.pvalue), smallest, exact, improvement)


def _finals(cell: Cell) -> np.ndarray:
    return group_scores(cell.group).final[:, 0]


class ParityRow(NamedTuple):
    dataset: str
    pair: PeerPair
    ours: np.ndarray  # our cell's final scores, one per seed
    peer: np.ndarray
    test: ParityTest


def parity_rows(cells: list[Cell]) -> list[ParityRow]:
    """Every pair of PEER_PAIRS with scores on both sides, per dataset in the cells' order."""
    by_key = {(c.dataset, c.method): c for c in cells}
    rows = []
    for dataset in dict.fromkeys(c.dataset for c in cells):
        for pair in PEER_PAIRS:
            ours, peer = by_key.get((dataset, pair.ours)), by_key.get((dataset, pair.peer))
            if ours is None or peer is None:
                continue
            x, y = _finals(ours), _finals(peer)
            if len(x) and len(y):
                rows.append(ParityRow(dataset, pair, x, y, parity_test(x, y)))
    return rows


def _mean_std(v: np.ndarray) -> str:
    return f"{v.mean():.1f} ± {v.std(ddof=1):.1f}" if len(v) > 1 else f"{v.mean():.1f}"


def _p(t: ParityTest) -> str:
    return f"{t.p_value:.3f}" + ("" if t.exact else f" ({RANDOM_SPLITS} resamples)")


def parity_lines(rows: Sequence[ParityRow]) -> list[str]:
    """The page's section on our cells against their peer cells (``parity_rows``); empty without a pair."""
    if not rows:
        return []
    body = []
    for dataset, pair, x, y, t in rows:
        e = t.improvement
        p_improve = f"{e.value:.2f}" + (f" [{e.low:.2f}, {e.high:.2f}]" if e.has_interval else "")
        body.append(
            [
                dataset,
                f"{pair.ours} vs {pair.peer}",
                pair.settings,
                f"{len(x)} / {len(y)}",
                _mean_std(x),
                _mean_std(y),
                f"{t.difference:+.2f}",
                p_improve,
                _p(t),
                f"{t.smallest_p:.3f}",
                t.verdict,
            ]
        )
    header = [
        "dataset",
        "ours vs peer",
        "settings",
        "seeds",
        "ours final",
        "peer final",
        "difference",
        "P(ours > peer) [95% CI]",
        "permutation p",
        "smallest p possible",
        "reading",
    ]
    return [
        "## Ours against the peers",
        "",
        "Each of our cells beside the peer cell it is meant to match (same dataset, seeds, steps, network, batch "
        "and evaluation). Final normalized scores, mean ± std over seeds; the difference of the means; the "
        "probability that a seed of ours beats a seed of the peer's, with rliable's 95% bootstrap CI; and a "
        "two-sided permutation test of the difference (scipy, every split of the pooled seeds enumerated). "
        f"'Within noise' means p ≥ {SIGNIFICANCE}; the smallest p possible shows when the seed counts could not "
        "have told the two apart whatever the scores.",
        "",
        *table(header, body),
    ]
