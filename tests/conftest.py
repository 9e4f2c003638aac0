"""Shared fixtures: isolated Minari store, wandb off, and a tiny composed config."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from data_helpers import make_minari_dataset
from hydra import compose, initialize_config_module
from levels import pytest_collection_modifyitems  # noqa: F401  (marks each test math, component or cli)
from omegaconf import DictConfig

TINY_DATASET = "test/pendulum/tiny-v0"
# Tiny networks gain nothing from a second thread, and OpenMP threads spinning on a busy
# machine can slow a test run by 10x.
SUBPROCESS_ENV = {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
TINY_OVERRIDES = ["debug=tiny", "dataset.path=null", f"dataset.id={TINY_DATASET}", "logger=none"]


@pytest.fixture(scope="session")
def minari_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Minari store holding a tiny Pendulum dataset, shared by the whole session."""
    root = tmp_path_factory.mktemp("minari")
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    make_minari_dataset(TINY_DATASET, n_episodes=4, max_steps=100, ref_min_score=-1500.0, ref_max_score=-150.0)
    yield root
    if previous is None:
        os.environ.pop("MINARI_DATASETS_PATH", None)
    else:
        os.environ["MINARI_DATASETS_PATH"] = previous


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    cache = tmp_path_factory.getbasetemp() / "cql_runner_cache"
    monkeypatch.setenv("CQL_RUNNER_CACHE_DIR", str(cache))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_SILENT", "true")


@pytest.fixture
def compose_cfg() -> Callable[..., DictConfig]:
    """Compose the real cql-train config with overrides (as the CLI would)."""
    from cql_runner.config import register_configs

    register_configs()

    def _compose(overrides: Sequence[str] = ()) -> DictConfig:
        with initialize_config_module("cql_runner.conf", version_base="1.3"):
            return compose("train", overrides=list(overrides))

    return _compose


def run_cli(
    args: Sequence[str], cwd: Path, timeout: float = 180, script: str = "cql-train", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a console script of this package in a subprocess, as a user would."""
    exe = Path(sys.executable).parent / script
    full_env = {**os.environ, **SUBPROCESS_ENV, **(env or {})}
    return subprocess.run([str(exe), *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
