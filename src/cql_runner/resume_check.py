"""Checks made before a run dir is resumed, while nothing in it has been written yet.

A run dir's ``config.yaml`` is the config its checkpoints were trained with (it is only
rewritten once these checks pass). Resuming with other values would either fail deep in
``load_state_dict`` (a changed network) or, worse, silently switch hyperparameters halfway
while config.yaml claims the new values for the whole run. So a resume compares the two
configs first and refuses on any difference that matters, unless the user opts in with
``resume_allow_changes=true``; the accepted changes are then appended to
``<run_dir>/config_changes.jsonl`` with the step they took effect at.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import yaml
from omegaconf import DictConfig, OmegaConf

from cql_runner.config import ConfigError

CHANGES_FILE = "config_changes.jsonl"

# Keys a resume may change freely: how long and how often, where, and how it is mirrored.
# Everything else shapes the run's numbers and must match (or be accepted explicitly).
FREE_KEYS = (
    "train.steps",
    "online.steps",
    "train.log_every",
    "train.checkpoint_every",
    "train.progress",
    "train.threads",
    "train.compile",
    "train.cuda_graph",
    "device",
    "run_dir",
    "resume",
    "resume_allow_changes",
    "eval.every",
    "eval.video_every",
    "eval.video_max_frames",
    "dataset.cache_dir",
    "dataset.download",
)
FREE_PREFIXES = ("logger.",)
# Keys that fix the shapes of the saved networks: no opt-in can continue with other values.
SHAPE_PREFIXES = ("network.",)


def has_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` (or one of its seed<k> dirs) holds a checkpoint file."""
    dirs = [run_dir, *sorted(run_dir.glob("seed*"))] if run_dir.is_dir() else []
    return any((d / "checkpoints" / name).is_file() for d in dirs for name in ("last.pt", "prev.pt"))


def check_resume_target(resume: str | None) -> None:
    """``resume=DIR`` must name an existing run dir with a checkpoint: a typo must not start a new run."""
    if not resume:
        return
    path = Path(resume)
    if not path.is_dir():
        raise ConfigError(
            f"resume={resume}: no such run dir; check the path, or pass run_dir={resume} to start a new run there"
        )
    if not has_checkpoint(path):
        raise ConfigError(
            f"resume={resume} holds no checkpoint to resume from; pass run_dir={resume} to train it from scratch"
        )


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _is_free(key: str) -> bool:
    return key in FREE_KEYS or key.startswith(FREE_PREFIXES)


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{key: (old, new)}`` for every compared key whose value differs. Keys the old config
    does not have (added to the schema since) are not compared."""
    a, b = flatten(old), flatten(new)
    return {k: (a[k], b.get(k)) for k in sorted(a) if not _is_free(k) and a[k] != b.get(k)}


def _previous_config(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    return loaded if isinstance(loaded, dict) else None


def _describe(changes: Mapping[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{k} {json.dumps(o)} -> {json.dumps(n)}" for k, (o, n) in changes.items())


def check_resume_config(
    run_dirs: list[Path], configs: list[DictConfig], allow_changes: bool
) -> dict[str, tuple[Any, Any]]:
    """Compare each run dir's recorded config with the new one before anything is written.

    Returns the accepted changes (empty unless ``allow_changes``); raises ConfigError listing
    the differing keys otherwise, or when a change alters the saved networks' shapes.
    """
    changes: dict[str, tuple[Any, Any]] = {}
    for run_dir, cfg in zip(run_dirs, configs):
        if not has_checkpoint(run_dir):
            continue
        old = _previous_config(run_dir)
        if old is None:
            continue
        new = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(new, dict)
        changes.update(config_changes(old, cast(dict[str, Any], new)))
    if not changes:
        return {}
    where = run_dirs[0].parent if len(run_dirs) > 1 else run_dirs[0]
    shape = {k: v for k, v in changes.items() if k.startswith(SHAPE_PREFIXES)}
    if shape:
        raise ConfigError(
            f"cannot resume {where}: its checkpoint was trained with other networks "
            f"({_describe(shape)}); resume with the old values or pass a new run_dir"
        )
    if not allow_changes:
        raise ConfigError(
            f"cannot resume {where} with a different config ({_describe(changes)}); resume "
            "with the old values, pass a new run_dir, or add resume_allow_changes=true to "
            f"continue with the new values (recorded in {CHANGES_FILE})"
        )
    return changes


def record_config_changes(run_dirs: list[Path], changes: Mapping[str, tuple[Any, Any]], step: int) -> None:
    """Append the accepted changes, and the step they apply from, to each run dir's changes file."""
    if not changes:
        return
    line = json.dumps(
        {
            "step": int(step),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "changes": {k: {"old": o, "new": n} for k, (o, n) in changes.items()},
        }
    )
    for run_dir in run_dirs:
        with open(run_dir / CHANGES_FILE, "a", encoding="utf-8") as f:
            f.write(line + "\n")
