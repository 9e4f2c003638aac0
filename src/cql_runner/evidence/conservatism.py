"""Does the Lagrange constraint keep CQL conservative over training? One row per seed.

The failure this section exists to catch: on medium data a threshold the gap never reaches makes the
dual step lower α′ at every update, the penalty anneals away, and CQL slowly turns into offline SAC,
its Q on dataset pairs climbing to their Monte-Carlo return. Each run logs ``alpha_prime``,
``q/data`` (the critics' mean Q on the batch's dataset pairs) and ``q/dataset_mc_return`` (the
discounted return-to-go of the same pairs), so both halves of the check come from the run's own log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cql_runner.evidence.gather_runs import Cell
from cql_runner.evidence.markdown import table
from cql_runner.report.collect_runs import Run, eval_scores

ALPHA_PRIME = "alpha_prime"
Q_DATA = "q/data"
MC_RETURN = "q/dataset_mc_return"
# Points of training reported in the table, as fractions of the run's last logged step.
FRACTIONS = (0.25, 0.5, 0.75, 1.0)
# "Annealed to zero": the runs this check was written for ended at α′ 0.012–0.03 from 1.
ALPHA_PRIME_FLOOR = 0.05


@dataclass(frozen=True)
class SeedCheck:
    """One seed's α′ and Q against the Monte-Carlo return, at FRACTIONS of training and over all of it."""

    seed: str
    steps: tuple[int, ...]
    alpha_prime: tuple[float, ...]
    q_data: tuple[float, ...]
    mc_return: tuple[float, ...]
    # Largest q/data − MC return over every logged step (negative: Q stayed below everywhere).
    worst_excess: float

    @property
    def q_below_mc(self) -> bool:
        return self.worst_excess < 0

    @property
    def alpha_prime_kept(self) -> bool:
        return self.alpha_prime[-1] >= ALPHA_PRIME_FLOOR

    @property
    def conservative(self) -> bool:
        return self.q_below_mc and self.alpha_prime_kept


def _at(points: list[tuple[int, float]], step: int) -> tuple[int, float]:
    """The last logged point at or before ``step`` (the first point if none is)."""
    before = [p for p in points if p[0] <= step]
    return before[-1] if before else points[0]


def seed_check(run: Run) -> SeedCheck | None:
    """None for a run without a Lagrange multiplier (``cql.lagrange`` off, or α′ logged as 0 throughout,
    as BC and fixed-α runs log it) or without the Monte-Carlo return."""
    if run.config.get("cql.lagrange") is False:
        return None
    alpha = eval_scores(run, ALPHA_PRIME)
    if all(a == 0 for _, a in alpha):
        return None
    q = dict(eval_scores(run, Q_DATA))
    mc = dict(eval_scores(run, MC_RETURN))
    paired = sorted(s for s in q if s in mc)
    if not alpha or not paired:
        return None
    end = paired[-1]
    marks = [round(f * end) for f in FRACTIONS]
    q_points = [(s, q[s]) for s in paired]
    mc_points = [(s, mc[s]) for s in paired]
    at_q = [_at(q_points, m) for m in marks]
    return SeedCheck(
        seed=run.path.name,
        steps=tuple(s for s, _ in at_q),
        alpha_prime=tuple(_at(alpha, m)[1] for m in marks),
        q_data=tuple(v for _, v in at_q),
        mc_return=tuple(_at(mc_points, m)[1] for m in marks),
        worst_excess=max(q[s] - mc[s] for s in paired),
    )


def cell_checks(cell: Cell) -> list[SeedCheck]:
    checks = (seed_check(r) for r in sorted(cell.runs, key=lambda r: r.path.name))
    return [c for c in checks if c is not None]


def checked_cells(cells: Sequence[Cell]) -> list[tuple[Cell, list[SeedCheck]]]:
    """Each cell with its seeds' checks, read once for the table and the α′ figure."""
    return [(cell, cell_checks(cell)) for cell in cells]


def conservatism_lines(checked: Sequence[tuple[Cell, list[SeedCheck]]]) -> list[str]:
    """The markdown section; nothing when no cell tunes α′."""
    rows: list[list[object]] = []
    verdicts: list[str] = []
    for cell, checks in checked:
        for c in checks:
            alpha = ", ".join(f"{a:.3g}" for a in c.alpha_prime)
            q_mc = ", ".join(f"{q:.0f}/{m:.0f}" for q, m in zip(c.q_data, c.mc_return, strict=True))
            steps = ", ".join(f"{s // 1000}k" if s % 1000 == 0 else str(s) for s in c.steps)
            verdict = "yes" if c.conservative else "no"
            rows.append([cell.dataset, cell.method, c.seed, steps, alpha, q_mc, f"{c.worst_excess:+.1f}", verdict])
        if checks:
            n_ok = sum(c.conservative for c in checks)
            verdicts.append(f"{cell.dataset} / {cell.method}: conservative in {n_ok} of {len(checks)} seeds")
    if not rows:
        return []
    return [
        "## Does the Lagrange constraint stay active?",
        "",
        "Per seed, at a quarter, half, three quarters and the end of training: α′, and the critics' Q on the "
        "batch's dataset pairs against the discounted Monte-Carlo return of the same pairs (Q / MC). "
        "*Max excess* is the largest Q − MC over every logged step. *Conservative* means Q stayed below MC at "
        f"every logged step and α′ ended at {ALPHA_PRIME_FLOOR} or more (not annealed to zero).",
        "",
        *table(["dataset", "method", "seed", "steps", "α′", "Q / MC", "max excess", "conservative"], rows),
        *(f"- {v}" for v in verdicts),
        "",
    ]
