"""Collect the parity cells' numbers from their run dirs into docs/parity/cells.json and docs/PARITY.md.

    python scripts/parity/table.py [--root /work/parity] [--docs docs]

Reads <root>/runs/<dataset>/<cell>/seed<k>/{metrics.jsonl,summary.json} (our runs and the peers' alike)
and <root>/logs/queue.log (each cell's settings and start time). Only small numbers are written: the
score, α′ and Q curves at the evaluation steps; never checkpoints. Rerun it while cells are still going:
a cell's row says how far it got.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import time
from pathlib import Path
from typing import Any

SCORE = "eval/normalized_score"
CELL_ORDER = ("d3rlpy-cql", "ours-b-main", "ours-b", "ours-a-main", "ours-a", "d3rlpy-bc", "tau10-evidence")
MILESTONES = (1000, 2000, 3000, 5000, 10000, 15000, 20000)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a row being written
            continue
    return rows


def queue_starts(log: Path) -> dict[str, tuple[float, str]]:
    """cell key 'dataset/cell' -> (last start time, the overrides it was started with then)."""
    out: dict[str, tuple[float, str]] = {}
    if not log.is_file():
        return out
    for line in log.read_text().splitlines():
        m = re.match(r"(\S+)Z start (\S+?)(?:: (.*))?$", line)
        if not m:
            continue
        t = time.mktime(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")) - time.timezone
        out[m.group(2)] = (t, m.group(3) or "")
    return out


def _mean_std(xs: list[float]) -> dict[str, float | int] | None:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return None
    return {"mean": statistics.fmean(xs), "std": statistics.pstdev(xs) if len(xs) > 1 else 0.0, "n": len(xs)}


def cell_record(cell_dir: Path, started: tuple[float, str] | None) -> dict[str, Any]:
    seeds = sorted(cell_dir.glob("seed*"), key=lambda p: int(p.name[4:]))
    per_seed: dict[str, Any] = {}
    last_mtime = 0.0
    carried = 0.0  # wall time of earlier attempts that the last start resumed (our summary at a stop)
    stopped_wall = 0.0  # a stopped or finished run of ours: its summary's own (cumulative) wall time
    for d in seeds:
        rows = read_jsonl(d / "metrics.jsonl")
        if (d / "metrics.jsonl").is_file():
            last_mtime = max(last_mtime, (d / "metrics.jsonl").stat().st_mtime)
        evals = [r for r in rows if SCORE in r]
        logged = [r for r in rows if "alpha_prime" in r or "q/data" in r]
        summary = json.loads((d / "summary.json").read_text()) if (d / "summary.json").is_file() else None
        if summary and started and (d / "summary.json").stat().st_mtime < started[0] and rows:
            carried = max(carried, float(summary.get("wall_time_s") or 0.0))
        if (
            summary
            and (d / "metrics.jsonl").is_file()
            and (d / "summary.json").stat().st_mtime >= (d / "metrics.jsonl").stat().st_mtime
        ):
            stopped_wall = max(stopped_wall, float(summary.get("wall_time_s") or 0.0))
        per_seed[d.name] = {
            "last_step": max((int(r["step"]) for r in rows), default=0),
            "scores": {int(r["step"]): r[SCORE] for r in evals},
            "alpha_prime": {int(r["step"]): r["alpha_prime"] for r in logged if "alpha_prime" in r},
            "q_data": {int(r["step"]): r["q/data"] for r in logged if "q/data" in r},
            "q_dataset_mc_return": {
                int(r["step"]): r["q/dataset_mc_return"] for r in logged if "q/dataset_mc_return" in r
            },
            "status": (summary or {}).get("status"),
            "summary_steps": (summary or {}).get("steps"),
        }
    common = set.intersection(*(set(s["scores"]) for s in per_seed.values())) if per_seed else set()
    at = {step: _mean_std([s["scores"][step] for s in per_seed.values()]) for step in sorted(common)}
    return {
        "seeds": list(per_seed),
        "per_seed": per_seed,
        "score_at": at,
        "last_common_eval": max(common) if common else None,
        "settings": started[1] if started else "",
        # From the cell's last start to its last metrics row, plus what a resumed earlier attempt had run.
        "wall_s": (
            round(stopped_wall, 1)
            if stopped_wall
            else round(carried + last_mtime - started[0], 1)
            if started and last_mtime > started[0]
            else None
        ),
    }


def _fmt(stat: dict[str, Any] | None) -> str:
    return "–" if stat is None else f"{stat['mean']:.1f} ± {stat['std']:.1f}"


def status_line(cells: dict[str, dict[str, Any]], steps: int = 20_000) -> str:
    done = [
        k
        for k, c in cells.items()
        if c["per_seed"]
        and all(s["summary_steps"] == steps and s["status"] == "completed" for s in c["per_seed"].values())
    ]
    partial = [k for k in cells if k not in done]
    return (
        f"{len(done)} cell(s) finished at {steps} steps ({', '.join(done) or 'none'}); "
        f"{len(partial)} stopped or running before it ({', '.join(partial) or 'none'}). "
        "Resume with `scripts/parity/queue.sh LANE` for each lane file (see docs/parity/README.md)."
    )


def markdown(cells: dict[str, dict[str, Any]], machine: str) -> str:
    lines = [
        "# Parity with d3rlpy 2.8.1: the measured cells",
        "",
        "Generated by `scripts/parity/table.py` from the run dirs of `scripts/parity/queue.sh`; the numbers "
        "are in [parity/cells.json](parity/cells.json). Normalized scores (0 = the dataset's random "
        "reference, 100 = its expert reference), mean ± std over the seeds at each evaluation step that "
        "every seed of the cell reached; 10 evaluation episodes per seed per point.",
        "",
        f"Machine: {machine}",
        "",
        f"Status: {status_line(cells)}",
        "",
        "| dataset | cell | seeds | steps reached | "
        + " | ".join(f"score @{m // 1000}k" for m in MILESTONES)
        + " | α′ at last log (per seed; d3rlpy: mean over the last interval) | wall s |",
        "| --- | --- | --- | --- | " + " | ".join("---" for _ in MILESTONES) + " | --- | --- |",
    ]
    for key, c in cells.items():
        dataset, cell = key.split("/")
        reached = min((s["last_step"] for s in c["per_seed"].values()), default=0)
        ap = []
        for s in c["per_seed"].values():
            if s["alpha_prime"]:
                ap.append(f"{s['alpha_prime'][max(s['alpha_prime'])]:.3g}")
        scores = " | ".join(_fmt(c["score_at"].get(m)) for m in MILESTONES)
        lines.append(
            f"| {dataset} | {cell} | {len(c['seeds'])} | {reached} | {scores} | {', '.join(ap) or '–'} "
            f"| {c['wall_s'] if c['wall_s'] is not None else '–'} |"
        )
    lines += [
        "",
        "Settings of each cell (the cql-train overrides after the shared budget; d3rlpy cells use "
        "d3rlpy's defaults with the budget's network, batch and N):",
        "",
    ]
    for key, c in cells.items():
        lines.append(f"- `{key}`: `{c['settings'] or 'd3rlpy defaults'}`")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=Path("/work/parity"))
    p.add_argument("--docs", type=Path, default=Path("docs"))
    p.add_argument(
        "--machine",
        default="Intel Xeon (AVX-512, no AMX), 2 cores shared with other jobs, no GPU; "
        "torch 2.13.0+cpu, one torch thread per process, two cells side by side",
    )
    args = p.parse_args(argv)
    starts = queue_starts(args.root / "logs" / "queue.log")
    cells: dict[str, dict[str, Any]] = {}
    runs = args.root / "runs"
    for ds in sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []:
        names = sorted(
            (c.name for c in ds.iterdir() if c.is_dir()),
            key=lambda n: (CELL_ORDER.index(n) if n in CELL_ORDER else len(CELL_ORDER), n),
        )
        for name in names:
            cells[f"{ds.name}/{name}"] = cell_record(ds / name, starts.get(f"{ds.name}/{name}"))
    (args.docs / "parity").mkdir(parents=True, exist_ok=True)
    (args.docs / "parity" / "cells.json").write_text(
        json.dumps({"machine": args.machine, "cells": cells}, indent=1) + "\n"
    )
    (args.docs / "PARITY.md").write_text(markdown(cells, args.machine))
    print(f"wrote {args.docs / 'PARITY.md'} ({len(cells)} cells)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
