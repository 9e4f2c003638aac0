"""Image data: the DQN Replay Dataset format, uint8 frames stacked at sampling time, the Nature CNN."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from data_helpers import write_dqn_replay

from cql_runner.config import CQLConfig, DiscreteConfig, NetworkConfig
from cql_runner.data.errors import DatasetError
from cql_runner.discrete.agent import DiscreteCQLAgent
from cql_runner.discrete.dqn_replay import DQNReplaySource
from cql_runner.discrete.frames import FrameSampler
from cql_runner.seeds import seed_state

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def replay_root(tmp_path: Path) -> Path:
    write_dqn_replay(tmp_path / "replay" / "Pong" / "1" / "replay_logs")
    return tmp_path / "replay"


def test_replay_loads_the_first_fraction_of_every_checkpoint(replay_root: Path) -> None:
    full = DQNReplaySource(path=replay_root, game="Pong", fraction=1.0).load()
    half = DQNReplaySource(path=replay_root, game="Pong", fraction=0.5).load()
    assert full.size == 120 and half.size == 60 and half.frames.dtype == np.uint8
    np.testing.assert_array_equal(half.frames[:30], full.frames[:30])
    np.testing.assert_array_equal(half.frames[30:], full.frames[60:90])
    assert full.meta.extra["frame_stack"] == 4 and full.meta.eval_env_id == "ALE/Pong-v5"
    # Every checkpoint starts an episode, and so does the row after each terminal.
    ends = np.flatnonzero(full.terminals[:-1]) + 1
    assert set(full.episode_starts) == {0, 60} | set(ends.tolist())


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"fraction": 0.0}, "dataset.fraction must be in"),
        ({"fraction": 1.5}, "dataset.fraction must be in"),
        ({"game": "Breakout"}, "no DQN replay data"),
    ],
)
def test_bad_replay_arguments_name_the_fix(replay_root: Path, kwargs: dict, words: str) -> None:
    with pytest.raises(DatasetError, match=words):
        DQNReplaySource(**{"path": replay_root, "game": "Pong", **kwargs}).load()


def test_missing_checkpoint_file_names_it(tmp_path: Path) -> None:
    folder = write_dqn_replay(tmp_path / "logs", skip=("reward", 1))
    with pytest.raises(DatasetError, match=r"checkpoint 1 .* lacks \$store\$_reward_ckpt\.1\.gz"):
        DQNReplaySource(path=folder).load()


def test_stacks_are_gathered_from_single_frames_and_match_a_loop(replay_root: Path) -> None:
    data = DQNReplaySource(path=replay_root, game="Pong").load()
    sampler = FrameSampler(data, [0], "cpu", discount=0.9, n_step=1)
    assert sampler.frames.dtype == torch.uint8 and sampler.frames.data_ptr() != 0
    # One uint8 copy of the frames plus 8-byte indices: no stored stacks, no float32.
    assert sampler.nbytes() < data.frames.nbytes + 60 * data.size
    starts = np.searchsorted(data.episode_starts, np.arange(data.size), side="right") - 1
    first = data.episode_starts[starts]
    batch = sampler.sample(16)
    for idx, obs, nxt in zip(sampler.last_indices[0].tolist(), batch.obs[0], batch.next_obs[0]):
        want = np.stack([data.frames[max(idx - 3 + j, first[idx])] for j in range(4)])
        np.testing.assert_array_equal(obs.numpy(), want)
        if data.terminals[idx] == 0:
            assert first[idx + 1] == first[idx]  # a next state is only sampled inside its episode
            want_next = np.stack([data.frames[max(idx - 2 + j, first[idx])] for j in range(4)])
            np.testing.assert_array_equal(nxt.numpy(), want_next)
    # The last row of each checkpoint ends an episode that was cut, not terminated: never sampled.
    assert not (set(sampler.valid.tolist()) & {59, 119} - set(np.flatnonzero(data.terminals).tolist()))


def test_cnn_agent_is_seed_vectorised(replay_root: Path) -> None:
    data = DQNReplaySource(path=replay_root, game="Pong").load()
    d = DiscreteConfig(encoder="nature_cnn", backbone="qr_dqn", n_quantiles=3, target_update_every=2)
    c, n = CQLConfig(alpha=1.0, lagrange=False), NetworkConfig(n_critics=1)

    def train(seeds: list[int]) -> DiscreteCQLAgent:
        agent = DiscreteCQLAgent(4 * 84 * 84, 3, seeds, n, c, d, obs_shape=data.obs_shape)
        sampler = FrameSampler(data, seeds, "cpu", discount=0.99, n_step=2)
        for _ in range(3):
            agent.update(sampler.sample(4))
        return agent

    torch.set_num_threads(1)
    vec = train([1, 6])
    single = train([6])
    for name, value in single.checkpoint_state()["modules"].items():
        torch.testing.assert_close(seed_state(vec, 1)["modules"][name], value, rtol=1e-4, atol=1e-6, msg=name)


def _replay_args(replay_root: Path, *, steps: int, every: int, episode_steps: int) -> list[str]:
    """cql-train on the tiny replay directory: all of a game's data, tiny batches and QR-DQN heads,
    evaluation and checkpoints every ``every`` steps."""
    return [
        "env=atari-replay",
        f"dataset.path={replay_root}",
        "game=Pong",
        "dataset.fraction=1.0",
        "logger=none",
        f"eval.max_episode_steps={episode_steps}",
        f"eval.every={every}",
        f"train.steps={steps}",
        "train.batch_size=4",
        f"train.log_every={every}",
        "discrete.n_quantiles=5",
        f"train.checkpoint_every={every}",
        "train.progress=false",
    ]


def test_cql_train_on_a_tiny_replay_directory(replay_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [
        *_replay_args(replay_root, steps=20, every=10, episode_steps=20),
        "eval.env_id=data_helpers:CqlRunnerFrames-v0",
        "eval.episodes=2",
        f"run_dir={run_dir}",
    ]
    proc = run_cli(args, cwd=tmp_path, env={"PYTHONPATH": str(TESTS)})
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["dataset_id"] == "dqn-replay/Pong/1"
    assert summary["final_return"] is not None
    # The MLP on image frames is refused in one line.
    bad = run_cli(
        [*args[:-1], f"run_dir={tmp_path / 'bad'}", "discrete.encoder=mlp"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(TESTS)},
    )
    assert bad.returncode == 2 and "discrete.encoder=nature_cnn" in bad.stderr and "Traceback" not in bad.stderr


def test_cql_train_on_replay_evaluates_greedily_in_ale(replay_root: Path, tmp_path: Path) -> None:
    """ALE/Pong-v5 under the DQN Replay Dataset's preprocessing (ale-py and OpenCV: the atari extra)."""
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    run_dir = tmp_path / "run"
    args = [
        *_replay_args(replay_root, steps=10, every=5, episode_steps=15),
        "eval.episodes=1",
        "discrete.eval_epsilon=0",
        f"run_dir={run_dir}",
    ]
    proc = run_cli(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["final_return"] is not None
