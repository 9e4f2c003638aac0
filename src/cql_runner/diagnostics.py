"""Warnings about training dynamics that are legal config but usually a mistake, read from logged means."""

from __future__ import annotations

from collections.abc import Mapping

# α′ beyond this with the gap still above τ means the dual step can never be satisfied: α′ grows
# geometrically (seen at ~1800 after 20k steps with τ below the gap's floor), an unbounded penalty.
ALPHA_PRIME_RUNAWAY = 100.0


def lagrange_runaway(record: Mapping[str, float], tau: float, limit: float = ALPHA_PRIME_RUNAWAY) -> str | None:
    """A one-line warning when α′ keeps growing because the CQL gap cannot come down to τ, else None."""
    alpha_prime, gap = record.get("alpha_prime"), record.get("cql/gap")
    if alpha_prime is None or gap is None or alpha_prime <= limit or gap <= tau:
        return None
    return (f"alpha_prime has grown to {alpha_prime:.0f} while the CQL gap ({gap:.2f}) stays above "
            f"cql.tau={tau:g}: the gap cannot reach tau here, so the penalty grows without bound; "
            f"raise cql.tau above {gap:.1f}, or use cql.lagrange=false with a fixed cql.alpha")
