"""A summary.json for a run that failed before training started.

Range checks, data checks and resume checks run before the trainer writes anything, so
such a failure used to leave no summary: a sweep's bad job was then invisible to
``cql-report`` and to the sweep's tally. This writes the failed job's config.yaml and a
``"status": "failed"`` summary with the error, but only into a run dir that holds no
summary and no checkpoint yet, so a failed restart never overwrites the record of an
earlier run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cql_runner import strict_json
from cql_runner.resume_check import has_checkpoint

log = logging.getLogger("cql_runner")


def has_summary(run_dir: Path) -> bool:
    return (run_dir / "summary.json").is_file() or any(run_dir.glob("seed*/summary.json"))


def record_failed_start(cfg: DictConfig, run_dir: Path, exc: BaseException) -> None:
    """Write config.yaml (if absent) and a failed summary.json into a run dir without a run in it."""
    if has_summary(run_dir) or has_checkpoint(run_dir):
        return
    try:
        if not (run_dir / "config.yaml").is_file():
            (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        summary: dict[str, Any] = {
            "status": "failed",
            "error": f"{type(exc).__name__}: {exc}",
            "env": cfg.env.name,
            "seed": cfg.seed,
            "seeds": OmegaConf.to_container(cfg.seeds) if cfg.seeds is not None else None,
            "steps": 0,
        }
        tmp = run_dir / "summary.json.tmp"
        tmp.write_text(strict_json.dumps(summary, indent=2) + "\n")
        tmp.replace(run_dir / "summary.json")
    except Exception as write_error:  # the original error is what the user must see
        log.warning("could not record the failure in %s (%s)", run_dir, write_error)
