"""cql-collect: D4RL-style Minari datasets from behaviour policies trained with our own SAC."""

from cql_runner.collect.config import CollectConfig, default_dataset_id, register_configs
from cql_runner.collect.levels import collect
from cql_runner.collect.writer import CollectError

__all__ = ["CollectConfig", "CollectError", "collect", "default_dataset_id", "register_configs"]
