"""``cql-collect``: a thin Hydra wrapper over :func:`cql_runner.collect.collect`.

    cql-collect env=<Gymnasium id> level=<random|medium|expert|medium-replay|medium-expert> \\
        [dataset_id=<Minari id>] [collect.steps=N] [sac.steps=N] [seed=K] [overwrite=true] ...

The last line printed is ``dataset: <id>``. User errors (an unknown env or unsupported space, a
bad value, an existing dataset) print one line to stderr and exit with status 2; Ctrl-C exits
with 130, and rerunning the same command resumes SAC from its last checkpoint.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from cql_runner.checkpoint import CheckpointError
from cql_runner.collect.config import CollectConfig, register_configs
from cql_runner.collect.levels import collect
from cql_runner.collect.writer import CollectError
from cql_runner.config import ConfigError
from cql_runner.data.errors import DatasetError
from cql_runner.envs import EnvError
from cql_runner.overrides import bad_value, unknown_key

CONFIG_DIR, CONFIG_NAME = "cql_collect", "collect"
USER_ERRORS = (ConfigError, EnvError, CollectError, DatasetError, CheckpointError)


def _config_path() -> str:
    """The folder holding collect.yaml: ``cql_collect/`` inside the ``cql_runner.conf`` package
    when it is installed, else the repo's ``conf/cql_collect`` (running from a source tree).

    It is a folder of its own, not conf/ itself: there ``env`` is a config group of cql-train,
    and Hydra would read ``env=Hopper-v5`` as a choice in that group.
    """
    try:
        spec = importlib.util.find_spec("cql_runner.conf")
    except ModuleNotFoundError:
        spec = None
    roots: list[str | Path] = [
        *(spec.submodule_search_locations or [] if spec else []),
        Path(__file__).resolve().parents[3] / "conf",
    ]
    for root in roots:
        if (Path(root) / CONFIG_DIR / f"{CONFIG_NAME}.yaml").is_file():
            return str(Path(root) / CONFIG_DIR)
    return str(Path(__file__).resolve().parents[3] / "conf" / CONFIG_DIR)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


register_configs()


def main() -> None:
    """``cql-collect`` console script."""
    message = unknown_key(sys.argv[1:], CollectConfig) or bad_value(sys.argv[1:], CollectConfig)
    if message:
        print(f"cql-collect: error: {message}", file=sys.stderr)
        sys.exit(2)
    _collect()


@hydra.main(config_path=_config_path(), config_name=CONFIG_NAME, version_base="1.3")
def _collect(cfg: DictConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("cql_runner").setLevel(logging.INFO)
    try:
        collect(cfg)
    except USER_ERRORS as exc:
        print(f"cql-collect: error: {_one_line(exc)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(
            "cql-collect: interrupted; rerun the same command to resume SAC training from its last checkpoint",
            file=sys.stderr,
        )
        sys.exit(130)


if __name__ == "__main__":
    main()
