"""Warnings about training dynamics that are legal config but usually a mistake, read from logged means."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# α′ beyond this with the constraint still violated means the dual step can never be satisfied: α′
# grows geometrically (seen at ~1800 after 20k steps with τ below the gap's floor), an unbounded penalty.
ALPHA_PRIME_RUNAWAY = 100.0


def lagrange_runaway(
    record: Mapping[str, float], *, tau: float, alpha: float, lagrange_form: str, limit: float = ALPHA_PRIME_RUNAWAY
) -> str | None:
    """A one-line warning when α′ keeps growing because the constrained quantity cannot come down
    to τ (the gap for the raw form, alpha·gap for the weighted form), else None."""
    alpha_prime, gap = record.get("alpha_prime"), record.get("cql/gap")
    if alpha_prime is None or gap is None:
        return None
    weighted = lagrange_form == "weighted"
    constrained = alpha * gap if weighted else gap
    if alpha_prime <= limit or constrained <= tau:
        return None
    what = (
        f"cql.alpha x CQL gap ({alpha:g} x {gap:.2f} = {constrained:.2f})" if weighted else f"the CQL gap ({gap:.2f})"
    )
    return (
        f"alpha_prime has grown to {alpha_prime:.0f} while {what} stays above "
        f"cql.tau={tau:g}: it cannot come down to tau here, so the penalty grows without bound; "
        f"raise cql.tau above {constrained:.1f}, or use cql.lagrange=false with a fixed cql.alpha"
    )


def cql_diagnosis(cql: Any, record: Mapping[str, float]) -> str | None:
    """What a CQL agent (continuous or discrete) reports about its logged means: ``cql`` is its
    CQLConfig (or the DictConfig composed from it)."""
    if not cql.lagrange:
        return None
    return lagrange_runaway(record, tau=cql.tau, alpha=cql.alpha, lagrange_form=cql.lagrange_form)
