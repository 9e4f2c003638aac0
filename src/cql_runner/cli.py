"""Console scripts: thin ``@hydra.main`` wrappers over plain functions."""

from __future__ import annotations

import logging
import math
import sys
from importlib.resources import files

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from cql_runner.checkpoint import CheckpointError
from cql_runner.config import ConfigError, RunConfig, register_configs, unused_settings
from cql_runner.data.errors import DatasetError
from cql_runner.envs import EnvError
from cql_runner.overrides import did_you_mean, unknown_key
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
                return (f"unknown {name} '{option}'; {did_you_mean(option, choices)}available: {', '.join(choices)}"
                        + (" (to add a dataset, see `cql-collect`)" if name == "env" else ""))
    return None


def train_main() -> None:
    """``cql-train`` console script."""
    argv = sys.argv[1:]
    message = unknown_group_choice(argv) or unknown_key(argv, RunConfig, CONFIG_GROUPS)
    if message:
        print(f"cql-train: error: {message}", file=sys.stderr)
        sys.exit(2)
    _train()


@hydra.main(config_path="pkg://cql_runner.conf", config_name="train", version_base="1.3")
def _train(cfg: DictConfig) -> float:
    """``cql-train``: returns the final normalized score (the value sweepers maximise)."""
    from cql_runner.run import run

    for message in unused_settings(cfg):
        log.warning(message)
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
