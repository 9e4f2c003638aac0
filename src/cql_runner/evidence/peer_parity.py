"""Ours against the peers: each of our cells beside the peer cell it is meant to match, on the same
dataset, seeds, budget and evaluation, with the statistics that say whether a gap is more than noise.

Which cells pair up is decided here, once (``PEER_PAIRS``). The probability of improvement and its
interval are rliable's (through ``cql_runner.report.statistics``); the permutation test is scipy's,
exact whenever the seeds' splits can all be enumerated, so a p-value is never a coin-flip estimate
at the seed counts a suite runs. A tie, not a win, is what 'at least the peer's mean' cannot tell
apart from noise: the table gives the smallest p-value the seed counts allow, so a reader sees when
no result could have been significant, and a bootstrap interval of the difference of means (scipy),
so a reader sees how large a gap the seeds still leave room for.
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
    # 95% bootstrap CI of mean(x) − mean(y), each side resampled on its own; None with one score a side.
    difference_ci: tuple[float, float] | None

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
    """The difference of mean final scores with its 95% bootstrap CI, its two-sided permutation
    p-value and P(ours > peer).

    Needs at least one score on each side; a side with one score gets an enumerated p (scipy needs two)
    and no interval of the difference.
    """
    x, y = np.asarray(ours, dtype=float), np.asarray(peer, dtype=float)
    if not len(x) or not len(y):
        raise ValueError("a parity test needs at least one score on each side")
    splits = math.comb(len(x) + len(y), len(x))
    exact = splits <= EXACT_SPLITS
    p_value = _permutation_p(x, y, exact, seed)
    # scipy's two-sided p is twice the smaller one-sided p, and a one-sided p counts the observed split
    # itself, so no outcome gets below 2 / (number of splits).
    smallest = min(1.0, 2.0 / splits)
    improvement = probability_of_improvement(x, y, reps=DEFAULT_REPS, seed=seed)
    return ParityTest(float(x.mean() - y.mean()), p_value, smallest, exact, improvement, difference_ci(x, y, seed=seed))


def _mean_difference(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def _permutation_p(x: np.ndarray, y: np.ndarray, exact: bool, seed: int) -> float:
    """Two-sided permutation p of mean(x) − mean(y): twice the smaller one-sided tail, at most 1."""
    if min(len(x), len(y)) > 1:
        test = stats.permutation_test(
            (x, y),
            _mean_difference,
            permutation_type="independent",
            alternative="two-sided",
            vectorized=True,
            n_resamples=EXACT_SPLITS if exact else RANDOM_SPLITS,
            rng=np.random.default_rng(seed),
        )
        return float(test.pvalue)
    # scipy wants two scores a side; with one (a single-seed suite) the splits are which pooled score
    # stands alone, so enumerate them, with scipy's definition and its tolerance for ties.
    pooled = np.concatenate([x, y])
    rest = (pooled.sum() - pooled) / (len(pooled) - 1)  # the other side's mean when pooled[i] stands alone
    diffs = (pooled - rest) if len(x) == 1 else (rest - pooled)
    observed = float(x.mean() - y.mean())
    eps = 1e-14 * max(1.0, abs(observed))
    greater, less = np.mean(diffs >= observed - eps), np.mean(diffs <= observed + eps)
    return float(min(1.0, 2 * min(greater, less)))


def difference_ci(x: np.ndarray, y: np.ndarray, seed: int = DEFAULT_SEED) -> tuple[float, float] | None:
    """95% percentile-bootstrap CI of mean(x) − mean(y), the seeds of each side resampled independently.

    Percentile rather than BCa: BCa's jackknife is undefined when a side's scores are all equal, which
    a converged BC cell can produce. None when a side has a single score (nothing to resample).
    """
    if len(x) < 2 or len(y) < 2:
        return None
    ci = stats.bootstrap(
        (x, y),
        _mean_difference,
        n_resamples=DEFAULT_REPS,
        vectorized=True,
        paired=False,
        confidence_level=0.95,
        method="percentile",
        rng=np.random.default_rng(seed),
    ).confidence_interval
    return float(ci.low), float(ci.high)


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


def _difference(t: ParityTest) -> str:
    ci = t.difference_ci
    return f"{t.difference:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")


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
                _difference(t),
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
        "difference [95% CI]",
        "P(ours > peer) [95% CI]",
        "permutation p",
        "smallest p possible",
        "reading",
    ]
    return [
        "## Ours against the peers",
        "",
        "Each of our cells beside the peer cell it is meant to match (same dataset, seeds, steps, network, batch "
        "and evaluation). Final normalized scores, mean ± std over seeds; the difference of the means with a 95% "
        "bootstrap CI (each side's seeds resampled on their own), the range of gaps the seeds leave room for; the "
        "probability that a seed of ours beats a seed of the peer's, with rliable's 95% bootstrap CI; and a "
        "two-sided permutation test of the difference (scipy, every split of the pooled seeds enumerated). "
        f"'Within noise' means p ≥ {SIGNIFICANCE}; the smallest p possible shows when the seed counts could not "
        "have told the two apart whatever the scores.",
        "",
        *table(header, body),
    ]
