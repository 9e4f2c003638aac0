"""Console scripts: thin ``@hydra.main`` wrappers over plain functions."""

from __future__ import annotations

import logging
import math
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from cql_runner.checkpoint import CheckpointError
from cql_runner.config import ConfigError, register_configs
from cql_runner.data.errors import DatasetError
from cql_runner.envs import EnvError
from cql_runner.trainer import NonFiniteLossError

register_configs()
log = logging.getLogger("cql_runner")

# Errors whose message already names the fix: print one line, not a traceback.
USER_ERRORS = (ConfigError, DatasetError, EnvError, NonFiniteLossError, CheckpointError)


@hydra.main(config_path="pkg://cql_runner.conf", config_name="train", version_base="1.3")
def train_main(cfg: DictConfig) -> float:
    """``cql-train``: returns the final normalized score (the value sweepers maximise)."""
    from cql_runner.run import run

    try:
        summary = run(cfg)
    except USER_ERRORS as exc:
        message = f"cql-train: error: {exc}"
        if HydraConfig.get().mode.name == "MULTIRUN":
            # One bad job must not kill a sweep; its summary.json records the failure.
            log.error(message)
            return math.nan
        print(message, file=sys.stderr)
        sys.exit(2)
    score = summary.get("final_normalized_score")
    return math.nan if score is None else float(score)


if __name__ == "__main__":
    train_main()
