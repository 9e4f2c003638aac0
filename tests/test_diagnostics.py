"""Warnings read from logged training metrics."""

from __future__ import annotations

from cql_runner.diagnostics import lagrange_runaway


def test_lagrange_runaway_warns_only_when_alpha_prime_is_large_and_the_gap_stays_above_tau():
    # The IDP-medium probe with tau=1: the gap floors at ~2.25 and alpha_prime reaches ~1800.
    message = lagrange_runaway({"alpha_prime": 1800.0, "cql/gap": 2.25}, tau=1.0)
    assert message is not None and "cql.tau=1" in message and "raise cql.tau above 2.2" in message
    assert "\n" not in message
    assert lagrange_runaway({"alpha_prime": 1800.0, "cql/gap": 0.9}, tau=1.0) is None  # constraint met
    assert lagrange_runaway({"alpha_prime": 40.0, "cql/gap": 2.25}, tau=1.0) is None  # not large yet
    assert lagrange_runaway({"loss/td": 1.0}, tau=1.0) is None  # fixed alpha: nothing to judge
