"""Loggers: local JSONL (the record), console progress, and optional wandb and TensorBoard mirrors.

Importing this package imports neither wandb, tensorboard nor tqdm; each is loaded when first used.
"""

from cql_runner.logging.base import Logger, MultiLogger, NullLogger
from cql_runner.logging.console import ConsoleLogger
from cql_runner.logging.jsonl import JsonlLogger, read_jsonl
from cql_runner.logging.tensorboard_logger import TensorBoardLogger
from cql_runner.logging.wandb_logger import WandbLogger

__all__ = [
    "ConsoleLogger",
    "JsonlLogger",
    "Logger",
    "MultiLogger",
    "NullLogger",
    "TensorBoardLogger",
    "WandbLogger",
    "read_jsonl",
]
