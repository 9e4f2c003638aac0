"""Minari's discrete sets: atari/<game>/expert-v0 (raw RGB screens) and D4RL/minigrid/fourrooms-v0
(Dict observations with a text mission), built tiny with Minari's own writer."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
import pytest
import torch
from conftest import run_cli
from data_helpers import (
    GRID_ENV_ID,
    GRID_MISSION,
    grid_observation_space,
    make_atari_dataset,
    make_minigrid_dataset,
)

from cql_runner.data.errors import DatasetError
from cql_runner.data.minari_source import MinariSource
from cql_runner.data.spaces import DictLayout, flatten_entries
from cql_runner.discrete.evaluation import make_eval_env
from cql_runner.discrete.frames import FrameSampler
from cql_runner.discrete.minari_frames import MinariAtariSource
from cql_runner.envs import EnvError, make_env
from cql_runner.logging import read_jsonl

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def test_flatten_entries_matches_gymnasium_flatten() -> None:
    space = grid_observation_space()
    kept = gym.spaces.Dict({k: space[k] for k in ("direction", "image")})
    layout = DictLayout(("direction", "image"), {"direction": 4}, ("mission",))
    kept.seed(3)
    samples = [kept.sample() for _ in range(5)]
    want = np.stack([gym.spaces.flatten(kept, s) for s in samples]).astype(np.float32)
    one = np.stack([flatten_entries({**s, "mission": GRID_MISSION}, layout, batch_dims=0) for s in samples])
    batched = flatten_entries({k: np.stack([s[k] for s in samples]) for k in ("direction", "image")}, layout, 1)
    np.testing.assert_array_equal(one, want)
    np.testing.assert_array_equal(batched, want)
    with pytest.raises(ValueError, match=r"outside Discrete\(4\)"):
        flatten_entries({"direction": np.array([4]), "image": np.zeros((1, 7, 7, 3))}, layout, 1)


def test_minigrid_set_drops_the_mission_and_flattens_direction_then_image(
    store: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_minigrid_dataset()
    with caplog.at_level(logging.INFO, logger="cql_runner.data.minari_source"):
        data = MinariSource(id="D4RL/minigrid/fourrooms-v0", cache_dir=str(tmp_path / "cache")).load()
    assert data.observations.shape == (data.size, 4 + 7 * 7 * 3) and data.meta.obs_keys is None
    assert data.meta.extra["n_actions"] == 7 and data.meta.eval_env_id == "MiniGrid-FourRooms-v0"
    assert data.meta.extra["obs_layout"] == {
        "keys": ["direction", "image"],
        "one_hot": {"direction": 4},
        "dropped": ["mission"],
    }
    assert "mission" in caplog.text and GRID_MISSION in caplog.text
    # Row 0 is episode 0's first observation (GridEnv reset with seed 0): the layout, entry by entry.
    env = gym.make(GRID_ENV_ID)
    first, _ = env.reset(seed=0)
    np.testing.assert_array_equal(data.observations[0, :4], np.eye(4)[first["direction"]])
    np.testing.assert_array_equal(data.observations[0, 4:], first["image"].reshape(-1))
    # The evaluation env presents the same vector for the same state.
    wrapped = make_eval_env(GRID_ENV_ID, 100, data.meta.extra)
    obs, _ = wrapped.reset(seed=0)
    np.testing.assert_array_equal(obs, data.observations[0])
    assert wrapped.observation_space.shape == (151,)


def test_minigrid_eval_env_needs_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "minigrid", None)
    # As if minigrid had never been imported: its envs are not registered.
    registry = {k: v for k, v in gym.registry.items() if not k.startswith("MiniGrid-")}
    monkeypatch.setattr(gym, "registry", registry)
    monkeypatch.setattr(gym.envs.registration, "registry", registry)
    with pytest.raises(EnvError, match=r"cql-runner\[minigrid\]"):
        make_env("MiniGrid-FourRooms-v0", 100, discrete=True)


def test_atari_set_loads_as_single_84x84_uint8_frames(store: Path) -> None:
    cv2 = pytest.importorskip("cv2")  # the atari extra's OpenCV resizes the screens

    make_atari_dataset(episode_lengths=(9, 7, 8))
    data = MinariAtariSource(id="atari/pong/expert-v0").load()
    assert data.frames.shape == (24, 84, 84) and data.frames.dtype == np.uint8
    assert data.episode_starts.tolist() == [0, 9, 16] and data.obs_shape == (4, 84, 84)
    assert data.terminals.nonzero()[0].tolist() == [8, 15]  # the last episode was truncated
    assert data.meta.eval_env_id == "ALE/Pong-v5" and data.meta.extra["n_actions"] == 6
    assert data.meta.extra["atari"] == {"pipeline": "resize-grey", "frameskip": 4, "repeat_action_probability": 0.0}
    # Frame t is screen t of its episode, resized (INTER_AREA) then made grey, as the data's policy saw it.
    # (Minari stores images JPEG-encoded by default, so the reference is the screen as Minari reads it back.)
    screen = minari.load_dataset("atari/pong/expert-v0")[0].observations[3]
    assert screen.shape == (210, 160, 3)
    resized = cv2.resize(screen, (84, 84), interpolation=cv2.INTER_AREA)
    grey = np.sum(resized * np.array([0.2125, 0.7154, 0.0721]), axis=-1).astype(np.uint8)
    np.testing.assert_array_equal(data.frames[3], grey)
    sampler = FrameSampler(data, [0], "cpu", discount=0.99, n_step=1)
    # One uint8 copy of the frames plus 8-byte indices, no stacked copies; the truncated episode's
    # last step (no next frame recorded) is never sampled.
    assert sampler.frames.dtype == torch.uint8 and sampler.nbytes() < data.frames.nbytes + 60 * data.size
    assert 23 not in sampler.valid.tolist() and {8, 15} <= set(sampler.valid.tolist())


def test_atari_set_without_opencv_names_the_extra(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_atari_dataset()
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(EnvError, match=r"OpenCV; install it with `pip install \"cql-runner\[atari\]\"`"):
        MinariAtariSource(id="atari/pong/expert-v0").load()


def test_the_vector_loader_refuses_image_sets_with_the_preset_to_use(store: Path) -> None:
    make_atari_dataset()
    with pytest.raises(DatasetError, match=r"env=atari-<game>-expert"):
        MinariSource(id="atari/pong/expert-v0").load()
    with pytest.raises(DatasetError, match=r"not RGB screens"):
        make_minigrid_dataset()
        MinariAtariSource(id="D4RL/minigrid/fourrooms-v0").load()


def test_ale_eval_envs_reproduce_each_datasets_frames() -> None:
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    minari_env = make_eval_env(
        "ALE/Pong-v5",
        30,
        {"atari": {"pipeline": "resize-grey", "frameskip": 4, "repeat_action_probability": 0.0}, "frame_stack": 4},
    )
    replay_env = make_eval_env(
        "ALE/Pong-v5",
        30,
        {
            "atari": {"pipeline": "dopamine", "frameskip": 4, "repeat_action_probability": 0.25, "noop_max": 30},
            "frame_stack": 4,
        },
    )
    for env in (minari_env, replay_env):
        obs, _ = env.reset(seed=1)
        assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
        for _ in range(3):
            obs, *_ = env.step(env.action_space.sample())
        assert obs.shape == (4, 84, 84)
    ale_minari, ale_replay = minari_env.unwrapped, replay_env.unwrapped
    assert (ale_minari._frameskip, ale_replay._frameskip) == (4, 1)
    assert ale_minari.ale.getFloat("repeat_action_probability") == 0.0
    assert ale_replay.ale.getFloat("repeat_action_probability") == pytest.approx(0.25)
    pre = replay_env.env
    while not isinstance(pre, gym.wrappers.AtariPreprocessing):
        pre = pre.env
    assert (pre.frame_skip, pre.noop_max, pre.screen_size, pre.grayscale_obs) == (4, 30, (84, 84), True)
    minari_env.close()
    replay_env.close()


def _train_args(env: str, run_dir: Path, *extra: str) -> list[str]:
    return [
        f"env={env}",
        "logger=none",
        "train.steps=12",
        "train.batch_size=4",
        "train.log_every=6",
        "train.checkpoint_every=6",
        "train.progress=false",
        "eval.every=6",
        "eval.episodes=1",
        f"run_dir={run_dir}",
        *extra,
    ]


def test_cql_train_on_a_tiny_minigrid_set(store: Path, tmp_path: Path) -> None:
    make_minigrid_dataset()
    run_dir = tmp_path / "run"
    args = _train_args(
        "minigrid-fourrooms", run_dir, f"eval.env_id=data_helpers:{GRID_ENV_ID}", "eval.max_episode_steps=20"
    )
    proc = run_cli(args, cwd=tmp_path, env={"PYTHONPATH": str(TESTS)})
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["dataset_id"] == "D4RL/minigrid/fourrooms-v0"
    assert summary["final_return"] is not None


def test_cql_train_minigrid_evaluates_in_minigrid(store: Path, tmp_path: Path) -> None:
    pytest.importorskip("minigrid")
    make_minigrid_dataset("D4RL/minigrid/fourrooms-random-v0")
    run_dir = tmp_path / "run"
    proc = run_cli(_train_args("minigrid-fourrooms-random", run_dir), cwd=tmp_path, env={"PYTHONPATH": str(TESTS)})
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["final_return"] is not None


def test_cql_train_on_a_tiny_atari_set(store: Path, tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    make_atari_dataset(n_actions=3)  # the stand-in eval env's action count
    run_dir = tmp_path / "run"
    args = _train_args(
        "atari-pong-expert",
        run_dir,
        "eval.env_id=data_helpers:CqlRunnerFrames-v0",
        "eval.max_episode_steps=20",
        "discrete.n_quantiles=5",
    )
    proc = run_cli(args, cwd=tmp_path, env={"PYTHONPATH": str(TESTS)})
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["dataset_id"] == "atari/pong/expert-v0"
    assert summary["final_return"] is not None


def test_cql_train_atari_evaluates_greedily_in_ale(store: Path, tmp_path: Path) -> None:
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    make_atari_dataset()
    run_dir = tmp_path / "run"
    args = _train_args(
        "atari-pong-expert", run_dir, "eval.max_episode_steps=25", "discrete.n_quantiles=5", "discrete.eval_epsilon=0"
    )
    proc = run_cli(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["final_return"] is not None
    # Pong lasts longer than 25 agent steps: each greedy evaluation ran to the cap.
    evals = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "eval/length" in r]
    assert evals and all(r["eval/length"] == 25 for r in evals)


def test_cql_train_without_minigrid_stops_in_one_line_naming_the_extra(store: Path, tmp_path: Path) -> None:
    make_minigrid_dataset()
    # A module that fails to import, first on the path: the run sees minigrid as not installed.
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "minigrid.py").write_text("raise ModuleNotFoundError('hidden by the test', name='minigrid')\n")
    run_dir = tmp_path / "run"
    proc = run_cli(_train_args("minigrid-fourrooms", run_dir), cwd=tmp_path, env={"PYTHONPATH": str(hide)})
    assert proc.returncode == 2, proc.stderr[-2000:]
    [line] = proc.stderr.strip().splitlines()
    assert "MiniGrid-FourRooms-v0" in line and 'pip install "cql-runner[minigrid]"' in line
