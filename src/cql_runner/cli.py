"""Console scripts: thin ``@hydra.main`` wrappers over plain functions."""

from __future__ import annotations

import errno
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
from cql_runner.overrides import bad_value, did_you_mean, unknown_key
from cql_runner.run_lock import RunDirInUseError
from cql_runner.trainer import NonFiniteLossError

register_configs()
log = logging.getLogger("cql_runner")

# Errors whose message already names the fix: print one line, not a traceback.
USER_ERRORS = (ConfigError, DatasetError, EnvError, NonFiniteLossError, CheckpointError, RunDirInUseError)


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def one_line_message(exc: BaseException) -> str:
    """The user-facing line for an error that names its fix; a full disk outside checkpoints
    (metrics, config) gets one in the same words as a checkpoint write."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        where = f"cannot write {exc.filename}" if exc.filename else "cannot write the run's files"
        return f"{where}: no space left on device; free space and rerun to resume from the last checkpoint"
    return str(exc)


# The shell's status for a process ended by Ctrl-C (128 + SIGINT).
INTERRUPTED_EXIT = 130


def stopped_by_ctrl_c(summary: dict) -> bool:
    """Whether the run (or any seed of it) stopped on SIGINT."""
    return any(s.get("interrupted_by") == "SIGINT" for s in summary.get("runs", [summary]))


CONFIG_GROUPS = (
    "env",
    "network",
    "cql",
    "train",
    "eval",
    "logger",
    "launcher",
    "experiment",
    "debug",
    "hparams_search",
)


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
        # "a,b" sweeps over options; "[a,b]" selects several at once (logger=[wandb,tensorboard]).
        for option in value.removeprefix("[").removesuffix("]").split(","):
            if option not in choices:
                return f"unknown {name} '{option}'; {did_you_mean(option, choices)}available: {', '.join(choices)}" + (
                    " (to add a dataset, see `cql-collect`)" if name == "env" else ""
                )
    return None


def selected_loggers(argv: list[str]) -> set[str] | None:
    """The loggers a ``logger=`` override selects (``logger=many_loggers`` expanded), or None without one."""
    choice = next((a.partition("=")[2] for a in argv if a.startswith("logger=")), None)
    if choice is None:
        return None
    names = {n.strip() for n in choice.removeprefix("[").removesuffix("]").split(",") if n.strip()}
    return names - {"many_loggers"} | ({"wandb", "tensorboard"} if "many_loggers" in names else set())


def unselected_logger(argv: list[str]) -> str | None:
    """One-line message for ``logger.<name>.key=...`` when ``logger=`` does not select <name>: Hydra would
    otherwise fail with a traceback setting a key under an absent node."""
    selected = selected_loggers(argv)
    if selected is None:
        return None
    for arg in argv:
        key, sep, _ = arg.partition("=")
        head, _, rest = key.partition(".")
        name = rest.partition(".")[0]
        if sep and head == "logger" and name and name not in selected:
            choice = next(a for a in argv if a.startswith("logger=")).partition("=")[2]
            others = sorted(selected - {"none"})
            both = f" or logger=[{','.join(sorted([*others, name]))}]" if others else ""
            return f"{key} is set but logger={choice} does not select {name}; pass logger={name}{both}"
    return None


def train_main() -> None:
    """``cql-train`` console script."""
    argv = sys.argv[1:]
    message = (
        unknown_group_choice(argv)
        or unknown_key(argv, RunConfig, CONFIG_GROUPS)
        or bad_value(argv, RunConfig)
        or unselected_logger(argv)
    )
    if message:
        print(f"cql-train: error: {message}", file=sys.stderr)
        sys.exit(2)
    _train()
    from cql_runner.sweep_tally import last_tally

    if last_tally["failed"]:
        sys.exit(1)


@hydra.main(config_path="pkg://cql_runner.conf", config_name="train", version_base="1.3")
def _train(cfg: DictConfig) -> float:
    """``cql-train``: returns the final normalized score (the value sweepers maximise)."""
    from cql_runner.run import run

    for message in unused_settings(cfg):
        log.warning(message)
    try:
        summary = run(cfg)
    except KeyboardInterrupt:
        # Ctrl-C outside the training loop (which stops cleanly by itself): no traceback.
        print("cql-train: interrupted before training started or while closing", file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT)
    except (*USER_ERRORS, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno not in DISK_FULL:
            raise
        message = f"cql-train: error: {one_line_message(exc)}"
        hydra_cfg = HydraConfig.get()
        if getattr(hydra_cfg.mode, "name", None) == "MULTIRUN":
            # One bad job must not end a sweep; its summary.json records the failure. The basic
            # sweeper stops at a raising job but takes NaN; Optuna's rejects NaN but marks a
            # raising trial as failed and goes on.
            log.error(message)
            if "optuna" in str(hydra_cfg.sweeper.get("_target_", "")):
                raise
            return math.nan
        print(message, file=sys.stderr)
        sys.exit(2)
    if stopped_by_ctrl_c(summary):
        print(f"cql-train: interrupted at step {summary['steps']}; rerun the same command to resume", file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT)
    score = summary.get("final_normalized_score")
    return math.nan if score is None else float(score)


if __name__ == "__main__":
    train_main()
