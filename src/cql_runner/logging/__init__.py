"""Loggers: local JSONL (the record), console progress, and an optional wandb mirror.

Importing this package imports neither wandb nor tqdm; each is loaded when first used.
"""

from cql_runner.logging.base import Logger, MultiLogger, NullLogger
from cql_runner.logging.console import ConsoleLogger
from cql_runner.logging.jsonl import JsonlLogger, read_jsonl
from cql_runner.logging.wandb_logger import WandbLogger

__all__ = [
    "ConsoleLogger",
    "JsonlLogger",
    "Logger",
    "MultiLogger",
    "NullLogger",
    "WandbLogger",
    "read_jsonl",
]
