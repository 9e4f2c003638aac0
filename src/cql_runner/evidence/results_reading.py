"""The 'what the numbers say' section of RESULTS.md, generated from the numbers and never hard-coded.

Each sentence is a comparison the issue asks about (CQL vs BC, CQL vs offline SAC, Q̂ vs the Monte-Carlo
return), stated with the means it rests on, so a reader can check it against the tables above it and a
rerun with other results changes the text with them. Differences within one std are called ties.
"""

from __future__ import annotations

from cql_runner.evidence.gather_runs import Cell, quarter_change
from cql_runner.report.collect_runs import SCORE_KEY

CQL_METHODS = ("cql-lagrange", "cql-fixed", "cql-discrete")
# The same learners without the conservative term: offline SAC (continuous), offline Double DQN (discrete).
UNCONSERVATIVE = ("sac", "ddqn")


def _score(cell: Cell) -> str:
    s = cell.final
    return "–" if s.mean is None else f"{s.mean:.1f} ± {s.std:.1f}"


def _beats(a: Cell, b: Cell) -> str:
    """'beats', 'ties with' or 'trails' by final score, a tie meaning within the larger std."""
    x, y = a.final, b.final
    if x.mean is None or y.mean is None:
        return "cannot be compared with"
    margin = max(x.std, y.std)
    if x.mean - y.mean > margin:
        return "beats"
    if y.mean - x.mean > margin:
        return "trails"
    return "ties with"


def winner_sentence(dataset: str, cells: dict[str, Cell]) -> str:
    scored = [c for c in cells.values() if c.final.mean is not None]
    if not scored:
        return f"- **{dataset}**: no scores yet."
    best = max(scored, key=lambda c: c.final.mean or 0.0)
    ranking = ", ".join(f"{c.method} {_score(c)}" for c in sorted(scored, key=lambda c: -(c.final.mean or 0.0)))
    return f"- **{dataset}**: highest final normalized score: **{best.method}** (ranking: {ranking})."


def comparison_sentences(dataset: str, cells: dict[str, Cell]) -> list[str]:
    lines = []
    for cql in CQL_METHODS:
        if cql not in cells:
            continue
        for other in ("bc", *UNCONSERVATIVE):
            if other in cells:
                lines.append(
                    f"  - {cql} {_beats(cells[cql], cells[other])} {other} "
                    f"({_score(cells[cql])} vs {_score(cells[other])})."
                )
    return lines


def value_sentences(dataset: str, cells: dict[str, Cell]) -> list[str]:
    lines = []
    for method, cell in cells.items():
        if not cell.checks:
            continue
        q, mc = cell.check_stat("q_hat_s0"), cell.check_stat("mc_return_s0")
        if q.mean is None or mc.mean is None:
            continue
        side = "below" if q.mean < mc.mean else "above"
        lines.append(
            f"  - {method}: Q̂(s0) {q.mean:.1f} is {side} the Monte-Carlo return {mc.mean:.1f} "
            f"(under-estimates in {cell.n_underestimates}/{len(cell.checks)} seeds)."
        )
    return lines


def claims(by_dataset: dict[str, dict[str, Cell]]) -> list[str]:
    """Whether the paper's two claims hold here: CQL under-estimates, offline SAC over-estimates."""
    cql_checks = [c for cells in by_dataset.values() for m, c in cells.items() if m in CQL_METHODS and c.checks]
    sac_checks = [c for cells in by_dataset.values() for m, c in cells.items() if m == "sac" and c.checks]
    ddqn_checks = [c for cells in by_dataset.values() for m, c in cells.items() if m == "ddqn" and c.checks]
    lines = []
    if cql_checks:
        n = sum(c.n_underestimates for c in cql_checks)
        total = sum(len(c.checks) for c in cql_checks)
        lines.append(
            f"- Lower bound: CQL's Q̂(s0) was below the policy's Monte-Carlo return in {n} of {total} "
            "trained CQL policies (every CQL variant, dataset and seed)."
        )
    if sac_checks:
        n = sum(len(c.checks) - c.n_underestimates for c in sac_checks)
        total = sum(len(c.checks) for c in sac_checks)
        lines.append(f"- Offline SAC's Q̂(s0) was above its Monte-Carlo return in {n} of {total} policies.")
    if ddqn_checks:
        n = sum(len(c.checks) - c.n_underestimates for c in ddqn_checks)
        total = sum(len(c.checks) for c in ddqn_checks)
        lines.append(f"- Offline Double DQN's Q̂(s0) was above its Monte-Carlo return in {n} of {total} policies.")
    return lines


def flatness(by_dataset: dict[str, dict[str, Cell]]) -> list[str]:
    """The largest end-of-training movement of the score and of Q, so 'flattened' is a measured claim."""
    score_moves, q_moves = [], []
    for dataset, cells in by_dataset.items():
        for method, cell in cells.items():
            score, q = quarter_change(cell.runs, SCORE_KEY), quarter_change(cell.runs, "q/data")
            if score is not None:
                score_moves.append((abs(score[0] - score[1]), score[0] - score[1], f"{dataset}/{method}"))
            if q is not None and q[1] != 0:
                rel = 100 * (q[0] - q[1]) / abs(q[1])
                q_moves.append((abs(rel), rel, f"{dataset}/{method}"))
    lines = []
    if score_moves:
        _, move, where = max(score_moves)
        lines.append(
            f"- Flatness: from the third to the last quarter of training the seed-mean score moved by at "
            f"most {move:+.1f} points ({where}); {sum(m < 5 for m, _, _ in score_moves)} of "
            f"{len(score_moves)} curves moved by less than 5 points."
        )
    if q_moves:
        _, move, where = max(q_moves)
        lines.append(
            f"- Q on dataset pairs moved by at most {move:+.0f}% between those quarters ({where}); "
            f"{sum(m < 10 for m, _, _ in q_moves)} of {len(q_moves)} moved by less than 10%."
        )
    return lines


def beyond_reference(by_dataset: dict[str, dict[str, Cell]]) -> list[str]:
    """Scores above 100 are not a bug: the reference is the behaviour SAC's expert snapshot, not the task's best."""
    over = [
        f"{dataset}/{method} ({_score(cell)})"
        for dataset, cells in by_dataset.items()
        for method, cell in cells.items()
        if cell.final.mean is not None and cell.final.mean > 100
    ]
    if not over:
        return []
    return [
        f"- Above 100: {', '.join(over)}. These policies return more than the dataset's expert reference, "
        "which for a dataset built by cql-collect is the expert snapshot of its behaviour learner (SAC, or DQN "
        "on discrete actions), "
        "not the task's ceiling."
    ]


def reading(by_dataset: dict[str, dict[str, Cell]]) -> list[str]:
    """Markdown lines of the generated reading."""
    lines = [
        "## What the numbers say (generated)",
        "",
        "Generated by `cql-evidence results` from the tables above; a 'tie' means the means differ "
        "by less than the larger std over seeds. Edit the README's summary by hand, not this section.",
        "",
    ]
    for dataset, cells in by_dataset.items():
        lines.append(winner_sentence(dataset, cells))
        lines += comparison_sentences(dataset, cells)
        lines += value_sentences(dataset, cells)
    lines += ["", *claims(by_dataset), *flatness(by_dataset), *beyond_reference(by_dataset), ""]
    return lines
