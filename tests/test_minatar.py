"""MinAtar through cql-collect and cql-train (skipped without the minatar extra)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import minari
import numpy as np
import pytest
from conftest import compose_collect, run_cli

from cql_runner.collect import collect, default_dataset_id
from cql_runner.envs import EnvError, make_env

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "env=MinAtar/Breakout-v1",
    "max_episode_steps=200",
    "dqn.steps=400",
    "dqn.hidden=[32]",
    "dqn.start_steps=50",
    "dqn.eval_every=200",
    "dqn.eval_episodes=2",
    "ref_episodes=2",
    "collect.steps=200",
    "collect.envs=2",
    "progress=false",
]


def test_minatar_dataset_ids() -> None:
    assert default_dataset_id("MinAtar/Breakout-v1", "medium") == "cql_runner/minatar-breakout/medium-v0"
    assert default_dataset_id("MinAtar/SpaceInvaders-v1", "expert") == "cql_runner/minatar-space_invaders/expert-v0"


def test_missing_minatar_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import gymnasium as gym

    monkeypatch.setitem(sys.modules, "minatar.gym", None)
    monkeypatch.setattr(
        gym.envs.registration, "registry", {k: v for k, v in gym.registry.items() if not k.startswith("MinAtar/")}
    )
    with pytest.raises(EnvError, match=r"cql-runner\[minatar\]"):
        make_env("MinAtar/Breakout-v1", 100, discrete=True)


def test_collect_and_train_on_minatar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("minatar")
    store = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(store))
    cfg = compose_collect([*TINY, "level=medium", f"out_dir={tmp_path / 'cache'}"])
    dataset_id = collect(cfg)
    ds = minari.load_dataset(dataset_id)
    ep = ds[0]
    assert ds.action_space.n == 3 and np.asarray(ep.observations).shape[1:] == (10, 10, 4)
    run_dir = tmp_path / "run"
    proc = run_cli(
        [
            "env=minatar-breakout-medium",
            "logger=none",
            "train.steps=60",
            "train.log_every=30",
            "eval.every=30",
            "eval.episodes=2",
            "eval.max_episode_steps=200",
            "network.hidden=[32]",
            "train.progress=false",
            f"run_dir={run_dir}",
        ],
        cwd=tmp_path,
        env={"MINARI_DATASETS_PATH": str(store)},
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["dataset_id"] == "cql_runner/minatar-breakout/medium-v0"
