"""Turn a suite output dir into docs/RESULTS.md, docs/evidence/*.png and docs/evidence/results.json.

    cql-evidence results OUT [--out docs]

Only commit-sized outputs are written (tables, a JSON summary, figures); datasets and checkpoints stay in OUT.
The figures are drawn by cql-report's plotting code, one line per method and one panel per dataset.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cql_runner.evidence.conservatism import ALPHA_PRIME, checked_cells, conservatism_lines
from cql_runner.evidence.discrete_cells import (
    DISCRETE_METHODS,
    behaviour_words,
    discrete_value_note,
    logsumexp_words,
    network_words,
    page_title,
)
from cql_runner.evidence.finetune_page import finetune_cells, finetune_lines, plot_finetune
from cql_runner.evidence.gather_runs import Cell, by_dataset, gather, groups, quarter_change
from cql_runner.evidence.markdown import table
from cql_runner.evidence.peer_parity import ParityRow, parity_lines, parity_rows
from cql_runner.evidence.results_reading import CQL_METHODS, UNCONSERVATIVE, reading
from cql_runner.evidence.suite_plan import METHODS, OPTIONAL_METHODS
from cql_runner.evidence.value_figure import plot_value_check
from cql_runner.report.aggregate import Stat
from cql_runner.report.collect_runs import SCORE_KEY, ReportError
from cql_runner.report.group_stats import across_tasks, group_scores, row_stats
from cql_runner.report.render import plot_curves, plot_q_values
from cql_runner.report.stat_tables import fmt_estimate
from cql_runner.report.statistics import DEFAULT_REPS, DEFAULT_SEED, ESTIMATORS, TITLES, Estimate, aggregate_estimates
from cql_runner.report.statistics import probability_of_improvement as p_improvement

FIG_DIR = "evidence"


def _fmt(stat: Stat, digits: int = 1) -> str:
    return "–" if stat.mean is None else f"{stat.mean:.{digits}f} ± {stat.std:.{digits}f}"


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def budget_lines(plan: dict[str, Any], datasets: dict[str, Any], timing: dict[str, Any]) -> list[str]:
    lines = ["## Budget and machine", ""]
    if plan:
        lines += [
            f"- plan `{plan.get('name')}`: {plan.get('train_steps')} gradient steps per run, "
            f"network {plan.get('hidden')} ({network_words(plan)}), batch {plan.get('batch_size')}, "
            f"seeds {plan.get('seeds')} trained side by side in one process, {logsumexp_words(plan)}, "
            f"evaluation every {plan.get('eval_every')} steps on {plan.get('eval_episodes')} episodes, "
            f"{plan.get('value_episodes')} Monte-Carlo episodes per seed for the value check."
        ]
        if plan.get("extra_train"):
            lines.append(f"- extra cql-train overrides on every run: `{' '.join(plan['extra_train'])}`.")
    m = timing.get("machine", {})
    if m:
        gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
        lines.append(
            f"- machine: {m.get('cpu')}, {m.get('cores')} cores{gpu}; torch {m.get('torch')}, Python {m.get('python')}."
        )
    if timing.get("total_s") is not None:
        phases = timing.get("phases", {})
        part = {k: sum(v for p, v in phases.items() if p.startswith(k + ":")) for k in ("collect", "train", "value")}
        n_inv = len(timing.get("invocations", []))
        lines.append(
            f"- wall time of the suite: {timing['total_s'] / 3600:.2f} h over {n_inv} invocation(s) "
            f"(building datasets {part['collect'] / 60:.1f} min, training {part['train'] / 60:.1f} min, "
            f"value checks {part['value'] / 60:.1f} min; "
            "datasets reused from an existing store cost nothing here)."
        )
    lines.append("")
    if datasets:
        rows = [
            [
                k,
                f"`{d.get('dataset_id')}`",
                d.get("env_id"),
                d.get("level"),
                d.get("total_episodes"),
                d.get("total_steps"),
                f"{d.get('behaviour') or 'SAC'} {d.get('sac_steps')}",
                _num(d.get("ref_min_score")),
                _num(d.get("ref_max_score")),
            ]
            for k, d in datasets.items()
        ]
        lines += [
            f"Datasets, built by `cql-collect` ({behaviour_words(datasets)}; normalized score 0 = its random "
            "reference, 100 = its expert snapshot):",
            "",
        ]
        lines += table(
            [
                "dataset",
                "Minari id",
                "env",
                "level",
                "episodes",
                "transitions",
                "behaviour steps",
                "ref min",
                "ref max",
            ],
            rows,
        )
    return lines


def _num(x: Any) -> str:
    return "–" if not isinstance(x, (int, float)) else f"{x:.1f}"


def _iqm(scores: Any) -> Estimate | None:
    """IQM of one cell's per-seed scores with its 95% bootstrap CI (rliable), or None without scores."""
    return aggregate_estimates(scores, reps=DEFAULT_REPS, seed=DEFAULT_SEED)["iqm"] if len(scores) else None


# What a peer method trains, in words (its settings are the peer library's defaults, not cql-train keys).
PEER_WORDS = {
    "cql": "d3rlpy 2.8.1 `CQL` at its defaults, the budget's network, batch and N",
    "bc": "d3rlpy 2.8.1 `BC` at its defaults (deterministic policy), the budget's batch",
}


def method_lines(plan: dict[str, Any]) -> list[str]:
    """What each method of the plan trains: its cql-train overrides, or the peer library's defaults."""
    methods = plan.get("methods") or []
    if not methods:
        return []
    rows = []
    for m in methods:
        peer = m.get("peer")
        overrides = m.get("overrides") or []
        if peer:
            what = PEER_WORDS.get(peer, f"peer `{peer}`")
        elif overrides:
            what = "`" + " ".join(overrides) + "`"
        else:  # e.g. cql-discrete: the env preset's own cql settings
            what = "the dataset's preset (`env=<dataset>`) as it is"
        rows.append([m.get("name"), what])
    return ["## Methods", "", *table(["method", "what it trains"], rows), ""]


def score_lines(cells: list[Cell]) -> list[str]:
    rows = []
    for c in cells:
        scores = group_scores(c.group)
        rows.append(
            [
                c.dataset,
                c.method,
                len(c.scored),
                _fmt(c.final),
                fmt_estimate(_iqm(scores.final[:, 0])),
                _fmt(c.best),
                fmt_estimate(_iqm(scores.best[:, 0])),
                "–" if c.train_time_s is None else f"{c.train_time_s / 60:.1f}",
                "–" if c.steps_per_s is None else f"{c.steps_per_s:.1f}",
            ]
        )
    return [
        "## Normalized scores",
        "",
        "Mean ± std (ddof = 1) over seeds of the final and the best evaluation score (D4RL normalization), and "
        "beside each the interquartile mean (IQM) with its 95% bootstrap confidence interval, computed with "
        f"rliable ({DEFAULT_REPS} resamples); one seed gets no interval.",
        "",
        *table(
            [
                "dataset",
                "method",
                "seeds",
                "final",
                "final IQM [95% CI]",
                "best",
                "best IQM [95% CI]",
                "train min (all seeds)",
                "steps/s",
            ],
            rows,
        ),
        *aggregate_lines(cells),
    ]


def aggregate_lines(cells: list[Cell]) -> list[str]:
    """Each method over all datasets (runs × datasets, stratified bootstrap), and P(CQL > peer) between methods."""
    settings = across_tasks([c.group for c in cells])
    if not settings:
        return []
    rows = []
    for s in settings:
        est = row_stats(s, DEFAULT_REPS, DEFAULT_SEED).final or {}
        rows.append([s.values[0], f"{s.n} × {s.final.shape[1]}", *(fmt_estimate(est.get(n)) for n in ESTIMATORS)])
    lines = [
        "### Over all datasets",
        "",
        "Final normalized score of each method over every dataset with 95% stratified bootstrap CIs "
        "(rliable: seeds resampled within each dataset; optimality gap = mean shortfall below 100).",
        "",
        *table(["method", "seeds × datasets", *(TITLES[n] for n in ESTIMATORS)], rows),
    ]
    by_method = {s.values[0]: s.final for s in settings}
    pairs = [(a, b) for a in CQL_METHODS for b in (*UNCONSERVATIVE, "bc") if a in by_method and b in by_method]
    if pairs:
        prob_rows = []
        for a, b in pairs:
            e = p_improvement(by_method[a], by_method[b], reps=DEFAULT_REPS, seed=DEFAULT_SEED)
            ci = f" [{e.low:.2f}, {e.high:.2f}]" if e.has_interval else " (n = 1, no interval)"
            prob_rows.append([f"P({a} > {b})", f"{e.value:.2f}{ci}"])
        lines += [
            "Probability of improvement (a seed of the first method beats a seed of the second on the same "
            "dataset, averaged over datasets; 0.5 = no difference):",
            "",
            *table(["comparison", "P [95% CI]"], prob_rows),
        ]
    return lines


def plateau_lines(cells: list[Cell]) -> list[str]:
    rows = []
    for c in cells:
        score, q = quarter_change(c.runs, SCORE_KEY), quarter_change(c.runs, "q/data")
        score_cell = "–" if score is None else f"{score[1]:.1f} → {score[0]:.1f} ({score[0] - score[1]:+.1f})"
        q_cell = "–" if q is None or q[1] == 0 else f"{q[1]:.1f} → {q[0]:.1f} ({100 * (q[0] - q[1]) / abs(q[1]):+.0f}%)"
        rows.append([c.dataset, c.method, score_cell, q_cell])
    return [
        "## Have the curves flattened?",
        "",
        "Seed-mean of each curve over the third quarter of training → over the last quarter (change in "
        "brackets): normalized score in points, the critics' Q(s, a) on dataset pairs (q/data) in percent.",
        "",
        *table(["dataset", "method", "score, 3rd → 4th quarter", "q/data, 3rd → 4th quarter"], rows),
    ]


def value_lines(cells: list[Cell]) -> list[str]:
    rows = []
    for c in cells:
        if not c.checks:
            continue
        q, mc = c.check_stat("q_hat_s0"), c.check_stat("mc_return_s0")
        below = "–" if q.mean is None or mc.mean is None else ("yes" if q.mean < mc.mean else "no")
        dq, dmc = c.check_stat("q_hat_dataset_s0_matched"), c.check_stat("mc_return_dataset_s0")
        d_below = "–" if dq.mean is None or dmc.mean is None else ("yes" if dq.mean < dmc.mean else "no")
        rows.append(
            [
                c.dataset,
                c.method,
                _fmt(q),
                _fmt(c.check_stat("q_hat_s0_mean_critics")),
                _fmt(mc),
                _fmt(c.check_stat("q_hat_minus_mc")),
                f"{below} ({c.n_underestimates}/{len(c.checks)} seeds)",
                _fmt(c.check_stat("q_hat_dataset_s0")),
                _fmt(dq),
                _fmt(dmc),
                d_below,
            ]
        )
    return [
        "## Estimated vs true value (the lower-bound check)",
        "",
        "For each final policy π: Q̂(s0, π(s0)) (min over the critics, the value the actor maximises; the mean "
        "over critics next to it) against the discounted Monte-Carlo return of π from the same env reset "
        "states s0, in the reward units the critics were trained on (the env config's reward transform; "
        "scale 1 and bias 0 here). Mean ± std over seeds; 'Q̂ < MC' compares the means and counts seeds. "
        "'Q̂(dataset s0)' averages Q̂ over all of the dataset's episode starts; the last three columns start the "
        "policy from a spread of those very states (the env's MuJoCo state rebuilt from the observation; "
        "deterministic policy and dynamics, so one rollout per state is its exact return).",
        "",
        *table(
            [
                "dataset",
                "method",
                "Q̂(s0) min",
                "Q̂(s0) mean critics",
                "MC return",
                "Q̂ − MC",
                "Q̂ < MC",
                "Q̂(dataset s0)",
                "Q̂ (picked dataset s0)",
                "MC (same s0)",
                "Q̂ < MC there",
            ],
            rows,
        ),
        *discrete_value_note([check for c in cells for check in c.checks]),
    ]


def at_step_lines(at_step: int | None) -> list[str]:
    if at_step is None:
        return []
    return [
        f"**Every run is scored as of step {at_step}** (`--at-step {at_step}`): a run trained further counts "
        f"its evaluations up to step {at_step} only (final = the last of them), and its training time is "
        "pro-rated to that step.",
        "",
    ]


def figure_lines(figures: dict[str, Path], docs: Path) -> list[str]:
    lines = ["## Figures", ""]
    for title, path in figures.items():
        lines += [f"### {title}", "", f"![{title}]({path.relative_to(docs).as_posix()})", ""]
    return lines


def results_json(cells: list[Cell], parity: Sequence[ParityRow]) -> dict[str, Any]:
    def stat(s: Stat) -> dict[str, Any]:
        return {"mean": s.mean, "std": s.std, "n": s.n}

    def scores(s: Stat, values: Any) -> dict[str, Any]:
        # The per-seed scores too, so the IQM and its interval can be recomputed from this file alone.
        iqm = _iqm(values)
        return {
            **stat(s),
            "scores": [float(v) for v in values],
            "iqm": None if iqm is None else iqm.value,
            "iqm_ci": None if iqm is None or not iqm.has_interval else [iqm.low, iqm.high],
        }

    per_cell = {id(c): group_scores(c.group) for c in cells}
    out = {
        f"{c.dataset}/{c.method}": {
            "final_normalized_score": scores(c.final, per_cell[id(c)].final[:, 0]),
            "best_normalized_score": scores(c.best, per_cell[id(c)].best[:, 0]),
            "q_hat_s0": stat(c.check_stat("q_hat_s0")),
            "mc_return_s0": stat(c.check_stat("mc_return_s0")),
            "q_hat_dataset_s0": stat(c.check_stat("q_hat_dataset_s0")),
            "underestimates": c.n_underestimates,
            "q_hat_dataset_s0_matched": stat(c.check_stat("q_hat_dataset_s0_matched")),
            "mc_return_dataset_s0": stat(c.check_stat("mc_return_dataset_s0")),
            "n_value_checks": len(c.checks),
            "train_time_s": c.train_time_s,
        }
        for c in cells
    }
    for dataset, pair, _, _, t in parity:  # on our cell: how it compares with its peer's
        e = t.improvement
        out[f"{dataset}/{pair.ours}"][f"vs {pair.peer}"] = {
            "difference": t.difference,
            "difference_ci": list(t.difference_ci) if t.difference_ci else None,
            "permutation_p": t.p_value,
            "smallest_p": t.smallest_p,
            "p_improvement": e.value,
            "p_improvement_ci": [e.low, e.high] if e.has_interval else None,
            "reading": t.verdict,
        }
    return out


def write_results(out: Path, docs: Path, at_step: int | None = None) -> Path:
    """Write RESULTS.md and its figures for the suite in ``out``; returns the markdown's path.

    ``at_step``: score every run as of that step (cells trained for different budgets, compared at a
    common one); the page says so under its budget."""
    timing = _load(out / "timing.json")
    plan = timing.get("plan") or _load(out / "plan.json")
    planned = [str(m.get("name")) for m in plan.get("methods") or []]  # the plan's order first
    order = [*planned, *(m.name for m in (*METHODS, *DISCRETE_METHODS, *OPTIONAL_METHODS))]
    cells = gather(out, list(dict.fromkeys(order)), at_step)
    fig_dir = docs / FIG_DIR
    fig_dir.mkdir(parents=True, exist_ok=True)
    figures = {
        "Learning curves (normalized score)": fig_dir / "curves.png",
        "Q-values during training (q/data solid, q/policy dashed)": fig_dir / "q_values.png",
        "Lower-bound check: Q̂ vs Monte-Carlo return of the final policies": fig_dir / "value_check.png",
    }
    paths = list(figures.values())
    plot_curves(groups(cells), SCORE_KEY, paths[0])
    plot_q_values(groups(cells), paths[1])
    plot_value_check(by_dataset(cells), paths[2])
    checked = checked_cells(cells)
    tuned = [c for c, checks in checked if checks]
    if tuned:  # α′ curves of the cells that tune it (mean ± std over seeds)
        figures["α′ during training (cells with a Lagrange multiplier)"] = fig_dir / "alpha_prime.png"
        plot_curves(groups(tuned), ALPHA_PRIME, fig_dir / "alpha_prime.png")
    parity = parity_rows(cells)  # the permutation tests and bootstraps, once for the page and the JSON
    (fig_dir / "results.json").write_text(json.dumps(results_json(cells, parity), indent=2) + "\n")
    fine_tuned = finetune_cells(cells)  # cells with an online phase: their own section and figure
    ft_figure = plot_finetune(fine_tuned, fig_dir / "finetune_curves.png") if fine_tuned else None
    lines = [
        f"# {page_title(plan)}",
        "",
        "Generated by `make evidence` (`cql-evidence run`); rerun "
        "`cql-evidence results OUT --out docs` to refresh it from the run dirs.",
        "",
        *budget_lines(plan, _load(out / "datasets.json"), timing),
        *at_step_lines(at_step),
        *method_lines(plan),
        *score_lines(cells),
        *parity_lines(parity),
        *plateau_lines(cells),
        *value_lines(cells),
        *conservatism_lines(checked),
        *finetune_lines(fine_tuned, plan, ft_figure, docs),
        *figure_lines(figures, docs),
        *reading(by_dataset(cells)),
    ]
    md = docs / "RESULTS.md"
    md.write_text("\n".join(lines), encoding="utf-8")
    return md


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cql-evidence results", description=__doc__.splitlines()[0])
    p.add_argument("suite_out", type=Path, help="the suite's output dir (holds runs/, timing.json)")
    p.add_argument("--out", type=Path, default=Path("docs"), help="docs dir to write RESULTS.md into")
    p.add_argument(
        "--at-step", type=int, default=None, help="score every run as of this gradient step (a common budget)"
    )
    args = p.parse_args(argv)
    if args.at_step is not None and args.at_step <= 0:
        p.error(f"--at-step must be a positive step count (got {args.at_step})")
    try:
        md = write_results(args.suite_out, args.out, args.at_step)
    except ReportError as e:  # e.g. no run dirs under OUT/runs: one line, not a traceback
        print(f"cql-evidence results: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
