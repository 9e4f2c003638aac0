"""Find run dirs under the given paths and read what each one wrote: config, metrics, summary.

Only local files are read (never wandb), so a report works offline and on runs still going.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cql_runner.logging import read_jsonl

SCORE_KEY = "eval/normalized_score"
# A preempted run ("interrupted") is requeued and resumes in the same dir, so it counts as unfinished.
RUNNING_STATUSES = {"interrupted"}
KNOWN_STATUSES = {"completed", "failed", *RUNNING_STATUSES}


class ReportError(Exception):
    """A user error: bad paths, no runs, an unknown --group-by key. One line, exit status 2."""


@dataclass
class Run:
    path: Path
    config: dict[str, Any]  # flattened to dotted keys
    metrics: list[dict[str, Any]]
    summary: dict[str, Any] | None
    status: str  # completed | running | failed

    @property
    def task(self) -> str:
        name = self.config.get("env.name") or (self.summary or {}).get("env")
        return str(name) if name is not None else "?"

    @property
    def last_step(self) -> int | None:
        steps = [r["step"] for r in self.metrics if isinstance(r.get("step"), (int, float))]
        return int(max(steps)) if steps else None

    @property
    def error(self) -> str | None:
        return (self.summary or {}).get("error")


@dataclass
class Collection:
    runs: list[Run] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (run dir, why)


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file() and (
        (path / "metrics.jsonl").is_file() or (path / "summary.json").is_file()
    )


def find_run_dirs(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Every run dir at or below ``paths``, sorted by path and without duplicates."""
    found: dict[Path, Path] = {}
    for raw in paths:
        root = Path(raw)
        if not root.exists():
            raise ReportError(f"path does not exist: {root}")
        if not root.is_dir():
            raise ReportError(f"not a directory: {root}")
        for d in _walk_dirs(root):
            if is_run_dir(d):
                found.setdefault(d.resolve(), d)
    if not found:
        raise ReportError(
            f"no run dirs (a dir with config.yaml and metrics.jsonl or summary.json) under "
            f"{', '.join(str(p) for p in paths)}"
        )
    return sorted(found.values(), key=lambda p: _natural_key(str(p)))


def _walk_dirs(root: Path) -> Iterable[Path]:
    for dirpath, dirnames, _ in os.walk(root):
        # .hydra/ holds a config.yaml of its own; checkpoints/ holds nothing we read.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "checkpoints")
        yield Path(dirpath)


def _natural_key(text: str) -> list[tuple[int, int, str]]:
    """Sort sweep subdirs 0, 1, 2, ..., 10 numerically rather than 0, 1, 10, 2."""
    return [(0, int(c), "") if c.isdigit() else (1, 0, c) for c in re.split(r"(\d+)", text) if c]


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"cql": {"tau": 5}}`` -> ``{"cql.tau": 5}``. Lists stay leaves (as tuples, so they hash)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = _hashable(value)
    return flat


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _hashable(v)) for k, v in value.items()))
    if isinstance(value, float) and math.isnan(value):
        return math.nan  # one shared object, so two runs' NaNs compare as the same value in a set
    return value


def read_run(path: Path) -> Run:
    """Read one run dir. Raises ValueError (naming the file) when a file is corrupt."""
    config = _read_config(path / "config.yaml")
    summary = _read_summary(path / "summary.json")
    metrics = read_jsonl(path / "metrics.jsonl") if (path / "metrics.jsonl").is_file() else []
    return Run(path=path, config=flatten(config), metrics=metrics, summary=summary, status=_status(summary))


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path.name}: not valid YAML ({' '.join(str(exc).split())})") from exc
    if not isinstance(config, dict):
        raise ValueError(f"{path.name}: not a mapping")
    return config


def _read_summary(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
        if not text.strip():
            return None  # created but not yet written: the run is still going
        summary = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path.name}: not valid JSON ({exc})") from exc
    if not isinstance(summary, dict):
        raise ValueError(f"{path.name}: not a JSON object")
    if summary.get("status") not in KNOWN_STATUSES:
        raise ValueError(f"{path.name}: unknown status {summary.get('status')!r}")
    return summary


def _status(summary: dict[str, Any] | None) -> str:
    if summary is None or summary["status"] in RUNNING_STATUSES:
        return "running"
    return str(summary["status"])


def collect(paths: Sequence[str | os.PathLike[str]]) -> Collection:
    """Read every run dir under ``paths``; a corrupt one is skipped and recorded, not fatal."""
    result = Collection()
    for d in find_run_dirs(paths):
        try:
            result.runs.append(read_run(d))
        except (OSError, ValueError) as exc:
            result.skipped.append((d, " ".join(str(exc).split())))
    return result


def eval_scores(run: Run, key: str = SCORE_KEY) -> list[tuple[int, float]]:
    """(step, value) for every finite logged value of ``key``, in step order."""
    points = [
        (int(r["step"]), float(r[key]))
        for r in run.metrics
        if isinstance(r.get("step"), (int, float)) and _is_finite_number(r.get(key))
    ]
    return sorted(points)


def _is_finite_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def final_and_best(run: Run) -> tuple[float | None, float | None]:
    """The run's final and best normalized score.

    A finished run's summary is the record. A running run has no summary yet, or a stale one
    from before it was preempted and resumed, so its latest logged eval score stands in.
    """
    if run.status != "running" and run.summary is not None:
        return _finite_or_none(run.summary.get("final_normalized_score")), _finite_or_none(
            run.summary.get("best_normalized_score")
        )
    scores = [v for _, v in eval_scores(run)]
    return (scores[-1], max(scores)) if scores else (None, None)


def _finite_or_none(x: Any) -> float | None:
    return float(x) if _is_finite_number(x) else None
