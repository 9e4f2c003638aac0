"""Ours against the peers on the evidence page: the statistics against brute-force enumerations, and the
section and JSON entries built from a suite's cells."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from cql_runner.evidence.gather_runs import Cell
from cql_runner.evidence.peer_parity import difference_ci, parity_lines, parity_rows, parity_test
from cql_runner.evidence.results_page import results_json
from cql_runner.report.collect_runs import SCORE_KEY, Run


def _brute_force_p(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided p as scipy defines it: twice the smaller one-sided tail over every split, at most 1."""
    pooled, n = np.concatenate([x, y]), len(x)
    observed = x.mean() - y.mean()
    diffs = []
    for idx in itertools.combinations(range(len(pooled)), n):
        mask = np.zeros(len(pooled), bool)
        mask[list(idx)] = True
        diffs.append(pooled[mask].mean() - pooled[~mask].mean())
    d = np.array(diffs)
    eps = 1e-9 * max(1.0, abs(observed))
    greater, less = np.mean(d >= observed - eps), np.mean(d <= observed + eps)
    return min(1.0, 2 * min(greater, less))


@pytest.mark.math
@pytest.mark.parametrize("nx, ny", [(3, 3), (4, 6), (5, 2)])
def test_permutation_p_and_improvement_match_brute_force(nx: int, ny: int) -> None:
    rng = np.random.default_rng(nx * 10 + ny)
    x, y = rng.normal(5.0, 1.0, nx), rng.normal(5.5, 1.0, ny)
    t = parity_test(x, y)
    assert t.exact
    assert t.p_value == pytest.approx(_brute_force_p(x, y), abs=1e-12)
    assert t.difference == pytest.approx(x.mean() - y.mean())
    wins = np.mean([(a > b) + 0.5 * (a == b) for a in x for b in y])
    assert t.improvement.value == pytest.approx(wins)
    assert t.improvement.low is not None and t.improvement.low <= t.improvement.value <= t.improvement.high


@pytest.mark.math
def test_smallest_possible_p_is_reached_by_fully_separated_seeds() -> None:
    t = parity_test([10.0, 11.0, 12.0], [0.0, 1.0, 2.0])
    # 3 + 3 seeds: 20 splits, so no outcome gets below 2/20 (why three seeds a side cannot show a gap).
    assert t.p_value == pytest.approx(0.1) and t.smallest_p == pytest.approx(0.1)
    assert t.verdict == "at least the peer's mean" and t.improvement.value == 1.0
    low = parity_test([0.0, 1.0, 2.0, 3.0, 4.0], [10.0, 11.0, 12.0, 13.0, 14.0])
    assert low.p_value == pytest.approx(2 / 252) and low.verdict == "below the peer's mean"
    noisy = parity_test([5.3, 3.6, 3.5], [6.0, 6.5, 3.3])
    assert noisy.p_value == pytest.approx(0.4) and noisy.verdict == "below the peer's mean, within noise"
    with pytest.raises(ValueError, match="at least one score on each side"):
        parity_test([], [1.0])


def _cell(dataset: str, method: str, scores: list[float]) -> Cell:
    logs = [[{"step": 1000, SCORE_KEY: s}] for s in scores]
    return Cell(dataset, method, [Run(Path("."), {"seed": i}, log, None, "completed") for i, log in enumerate(logs)])


def test_section_pairs_each_cell_with_its_peer_only_where_both_ran() -> None:
    cells = [
        _cell("hopper-medium", "cql-as-d3rlpy", [5.3, 3.6, 3.5]),
        _cell("hopper-medium", "d3rlpy-cql", [6.0, 6.5, 3.3]),
        _cell("hopper-medium", "bc", [6.7, 6.8, 6.7]),  # no d3rlpy-bc here: no row
        _cell("idp-medium", "bc", [71.0, 72.0]),
        _cell("idp-medium", "d3rlpy-bc", [60.0, 61.0]),
        _cell("idp-medium", "cql-default", []),  # no scores yet: no row
        _cell("idp-medium", "d3rlpy-cql", [1.5, 1.4]),
    ]
    rows_of_cells = parity_rows(cells)  # the bootstraps are the slow part: once for the section and the JSON
    lines = parity_lines(rows_of_cells)
    rows = [line for line in lines if line.startswith("| hopper") or line.startswith("| idp")]
    assert len(rows) == 2
    hopper, idp = rows
    assert "cql-as-d3rlpy vs d3rlpy-cql" in hopper and "equivalent settings" in hopper
    assert "4.1 ± 1.0" in hopper and "5.3 ± 1.7" in hopper and "-1.13 [" in hopper
    assert "| 0.400 |" in hopper and "| 0.100 |" in hopper and "within noise" in hopper
    assert "bc vs d3rlpy-bc" in idp and "| +11.00 [+10.00, +12.00] |" in idp and "at least the peer's mean" in idp
    assert parity_lines(parity_rows([c for c in cells if c.method != "d3rlpy-cql" and c.method != "d3rlpy-bc"])) == []

    results = results_json(cells, rows_of_cells)
    entry = results["hopper-medium/cql-as-d3rlpy"]["vs d3rlpy-cql"]
    assert entry["permutation_p"] == pytest.approx(0.4) and entry["difference"] == pytest.approx(-1.1333, abs=1e-4)
    assert entry["reading"] == "below the peer's mean, within noise" and len(entry["p_improvement_ci"]) == 2
    low, high = entry["difference_ci"]
    assert low < entry["difference"] < high
    assert "vs d3rlpy-bc" in results["idp-medium/bc"] and "vs d3rlpy-bc" not in results["hopper-medium/bc"]


@pytest.mark.math
def test_difference_ci_covers_the_true_gap_with_the_normal_theory_width() -> None:
    # Two normal samples of 200 with a true gap of −0.5 and σ = 1: the percentile interval should sit
    # around the observed difference with about the width 2·1.96·sqrt(σ²/n + σ²/m) = 0.39.
    rng = np.random.default_rng(3)
    x, y = rng.normal(5.0, 1.0, 200), rng.normal(5.5, 1.0, 200)
    ci = difference_ci(x, y)  # alone: parity_test's rliable bootstrap is slow at 200 × 200 seeds
    assert ci is not None
    low, high = ci
    assert low < x.mean() - y.mean() < high and low < -0.5 < high
    se = np.sqrt(x.var(ddof=1) / len(x) + y.var(ddof=1) / len(y))
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.15)
    # Constant sides (a converged BC cell) give a zero-width interval, not an error; one score a side gives none.
    assert parity_test([6.7, 6.7, 6.7], [6.8, 6.8]).difference_ci == pytest.approx((-0.1, -0.1))
    assert parity_test([6.7], [6.8, 6.9]).difference_ci is None


@pytest.mark.math
@pytest.mark.parametrize("x, y", [([6.7], [6.8, 6.9, 5.0]), ([4.0, 6.0, 9.0, 1.0], [5.0]), ([1.0], [2.0])])
def test_a_single_seed_side_gets_the_enumerated_p_not_an_error(x: list[float], y: list[float]) -> None:
    # scipy's permutation test wants two scores a side; a one-seed suite must still get its page.
    t = parity_test(x, y)
    assert t.exact and t.p_value == pytest.approx(_brute_force_p(np.array(x), np.array(y)), abs=1e-12)
    assert t.difference_ci is None
