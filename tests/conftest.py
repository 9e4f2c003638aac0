"""Shared fixtures: isolated Minari store, wandb off, and a tiny composed config."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from data_helpers import make_minari_dataset
from hydra import compose, initialize_config_dir, initialize_config_module
from levels import pytest_collection_modifyitems  # noqa: F401  (marks each test math, component or cli)
from omegaconf import DictConfig

TINY_DATASET = "test/pendulum/tiny-v0"
COLLECT_CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "cql_collect"
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


def compose_collect(overrides: Sequence[str]) -> DictConfig:
    """Compose the real cql-collect config with overrides (as the CLI would)."""
    from cql_runner.collect import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(COLLECT_CONF_DIR), version_base="1.3"):
        return compose(config_name="collect", overrides=list(overrides))


def run_cli(
    args: Sequence[str], cwd: Path, timeout: float = 180, script: str = "cql-train", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a console script of this package in a subprocess, as a user would."""
    exe = Path(sys.executable).parent / script
    full_env = {**os.environ, **SUBPROCESS_ENV, **(env or {})}
    return subprocess.run([str(exe), *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def start_cli(args: Sequence[str], cwd: Path, script: str = "cql-train") -> subprocess.Popen[str]:
    """Start a console script of this package in the background (for tests that signal or kill it)."""
    exe = Path(sys.executable).parent / script
    return subprocess.Popen(
        [str(exe), *args],
        cwd=cwd,
        env={**os.environ, **SUBPROCESS_ENV},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_file(path: Path, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    """Until ``path`` exists with content; fails if the process ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size > 0:
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended before {path.name} was written: {proc.communicate()[1]}")
        time.sleep(0.02)
    raise AssertionError(f"{path} did not appear in time")
