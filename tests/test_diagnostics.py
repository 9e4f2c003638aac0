"""Warnings read from logged training metrics."""

from __future__ import annotations

from cql_runner.cql.diagnostics import lagrange_runaway


def test_lagrange_runaway_warns_only_when_alpha_prime_is_large_and_the_gap_stays_above_tau():
    # The IDP-medium probe with tau=1 (raw form): the gap floors at ~2.25 and alpha_prime reaches ~1800.
    raw = dict(tau=1.0, alpha=5.0, lagrange_form="raw")
    message = lagrange_runaway({"alpha_prime": 1800.0, "cql/gap": 2.25}, **raw)
    assert message is not None and "cql.tau=1" in message and "raise cql.tau above 2.2" in message
    assert "\n" not in message
    assert lagrange_runaway({"alpha_prime": 1800.0, "cql/gap": 0.9}, **raw) is None  # constraint met
    assert lagrange_runaway({"alpha_prime": 40.0, "cql/gap": 2.25}, **raw) is None  # not large yet
    assert lagrange_runaway({"loss/td": 1.0}, **raw) is None  # fixed alpha: nothing to judge


def test_lagrange_runaway_weighted_form_compares_alpha_times_gap_with_tau():
    weighted = dict(tau=10.0, alpha=5.0, lagrange_form="weighted")
    # 5 x 2.25 = 11.25 > 10: the weighted constraint (gap <= 2) is out of reach.
    message = lagrange_runaway({"alpha_prime": 1800.0, "cql/gap": 2.25}, **weighted)
    assert message is not None and "11.25" in message and "raise cql.tau above 11.2" in message
    # 5 x 1.5 = 7.5 <= 10: met, although the raw gap would be compared differently.
    assert lagrange_runaway({"alpha_prime": 1800.0, "cql/gap": 1.5}, **weighted) is None
    assert (
        lagrange_runaway({"alpha_prime": 1800.0, "cql/gap": 1.5}, tau=1.0, alpha=5.0, lagrange_form="raw") is not None
    )


def test_the_agent_owns_its_diagnosis():
    from cql_runner.config import CQLConfig, NetworkConfig
    from cql_runner.cql.agent import CQLAgent

    def agent(**cql):
        return CQLAgent(3, 2, [0], NetworkConfig(hidden=[8]), CQLConfig(n_actions=2, **cql))

    record = {"alpha_prime": 1800.0, "cql/gap": 2.25}
    assert "cql.alpha x CQL gap" in agent().diagnose(record)  # the weighted default: 5 x 2.25 > 10
    assert agent(lagrange_form="raw").diagnose(record) is None  # 2.25 <= 10
    assert agent(lagrange=False).diagnose(record) is None  # no multiplier to run away
