"""Console scripts: thin ``@hydra.main`` wrappers over plain functions."""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import sys
from importlib.resources import files

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from cql_runner.checkpoint import CheckpointError
from cql_runner.config import ConfigError, RunConfig, register_configs
from cql_runner.data.errors import DatasetError
from cql_runner.envs import EnvError
from cql_runner.trainer import NonFiniteLossError

register_configs()
log = logging.getLogger("cql_runner")

# Errors whose message already names the fix: print one line, not a traceback.
USER_ERRORS = (ConfigError, DatasetError, EnvError, NonFiniteLossError, CheckpointError)


CONFIG_GROUPS = ("env", "network", "cql", "train", "eval", "logger", "launcher", "experiment", "debug",
                 "hparams_search")


def group_options(group: str) -> list[str]:
    folder = files("cql_runner.conf") / group
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def unknown_group_choice(argv: list[str]) -> str | None:
    """One-line message for ``group=option`` overrides naming no config file, else None."""
    for arg in argv:
        name, sep, value = arg.partition("=")
        if not sep or name not in CONFIG_GROUPS or value in ("", "null"):
            continue
        choices = group_options(name)
        for option in value.split(","):
            if option not in choices:
                return (f"unknown {name} '{option}'; {_did_you_mean(option, choices)}available: {', '.join(choices)}"
                        + (" (to add a dataset, see `cql-collect`)" if name == "env" else ""))
    return None


def _did_you_mean(name: str, choices: list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(name, choices, n=2, cutoff=0.6)
    return f"did you mean {' or '.join(prefix + c for c in close)}? " if close else ""


def unknown_key(argv: list[str]) -> str | None:
    """One-line message for ``key=value`` overrides naming no field of the schema, else None.

    Hydra would reject them too, but in several lines that suggest appending with ``+``, which
    a structured config refuses as well; this names the likely key instead.
    """
    root = {f.name: f for f in dataclasses.fields(RunConfig)}
    for arg in argv:
        key, sep, _ = arg.partition("=")
        # Appends, deletions, Hydra's own keys, flags and group paths are Hydra's to judge.
        if not sep or key.startswith(("+", "~", "-", "hydra")) or "/" in key:
            continue
        head, _, rest = key.partition(".")
        if head in CONFIG_GROUPS and head not in root:
            continue
        if head not in root:
            keys = sorted({*root, *CONFIG_GROUPS})
            return f"unknown key '{key}'; {_did_you_mean(head, keys)}top-level keys: {', '.join(keys)}"
        schema = root[head].default_factory if rest else None  # type: ignore[misc]
        if not (rest and dataclasses.is_dataclass(schema)):
            continue
        fields = sorted(f.name for f in dataclasses.fields(schema))
        name = rest.partition(".")[0]
        if name not in fields:
            return (f"unknown key '{key}'; {_did_you_mean(name, fields, head + '.')}"
                    f"keys of {head}: {', '.join(fields)}")
    return None


def train_main() -> None:
    """``cql-train`` console script."""
    message = unknown_group_choice(sys.argv[1:]) or unknown_key(sys.argv[1:])
    if message:
        print(f"cql-train: error: {message}", file=sys.stderr)
        sys.exit(2)
    _train()


@hydra.main(config_path="pkg://cql_runner.conf", config_name="train", version_base="1.3")
def _train(cfg: DictConfig) -> float:
    """``cql-train``: returns the final normalized score (the value sweepers maximise)."""
    from cql_runner.run import run

    try:
        summary = run(cfg)
    except USER_ERRORS as exc:
        message = f"cql-train: error: {exc}"
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode.name == "MULTIRUN":
            # One bad job must not end a sweep; its summary.json records the failure. The basic
            # sweeper stops at a raising job but takes NaN; Optuna's rejects NaN but marks a
            # raising trial as failed and goes on.
            log.error(message)
            if "optuna" in str(hydra_cfg.sweeper.get("_target_", "")):
                raise
            return math.nan
        print(message, file=sys.stderr)
        sys.exit(2)
    score = summary.get("final_normalized_score")
    return math.nan if score is None else float(score)


if __name__ == "__main__":
    train_main()
