"""Build tiny datasets for tests with Minari's own writer (no jax, no network).

``make_minari_dataset`` writes into the Minari store named by ``MINARI_DATASETS_PATH``;
point that at a temp dir first (``monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))``).
``make_d4rl_file`` writes a legacy D4RL-style hdf5 file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import h5py
import minari
import numpy as np
from gymnasium.envs.registration import EnvSpec
from minari.data_collector import EpisodeBuffer
from minari.storage.datasets_root_dir import get_dataset_path

# A registered env with a Dict observation, so datasets built on it record an env spec.
DICT_ENV_ID = "CqlRunnerDictPoint-v0"
# Declared out of alphabetical order on purpose: the flattening order is
# observation, achieved_goal, desired_goal, then the rest sorted.
DICT_OBS_SHAPES = {"zeta": (1,), "desired_goal": (2,), "observation": (4,), "alpha": (3,), "achieved_goal": (2,)}


class DictPointEnv(gym.Env):
    """A point that drifts under a 2-D action; every Dict entry is a Box."""

    metadata: dict = {"render_modes": []}  # noqa: RUF012 (gymnasium's class attribute)

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Dict(
            {k: gym.spaces.Box(-np.inf, np.inf, shape, np.float64) for k, shape in DICT_OBS_SHAPES.items()}
        )
        self.action_space = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)
        self._t = 0
        self._state = np.zeros(15)

    def _obs(self) -> dict[str, np.ndarray]:
        out, i = {}, 0
        for k, (d,) in DICT_OBS_SHAPES.items():
            out[k] = self._state[i : i + d].copy()
            i += d
        return out

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._t = 0
        self._state = self.np_random.normal(size=15)
        return self._obs(), {}

    def step(self, action):
        self._t += 1
        self._state = self._state + 0.1 * np.resize(np.asarray(action, np.float64), 15)
        return self._obs(), float(-np.abs(self._state[:2]).sum()), False, False, {}


if DICT_ENV_ID not in gym.registry:
    # A string entry point keeps the spec JSON-serialisable, so Minari stores it.
    gym.register(DICT_ENV_ID, entry_point=f"{__name__}:DictPointEnv", max_episode_steps=100)


def _rollout(env: gym.Env, seed: int, max_steps: int, end: str | None) -> EpisodeBuffer:
    """One random-action episode, capped at ``max_steps`` (a truncation).

    ``end`` forces the last step's flags: "terminated" or "truncated".
    """
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    observations, actions, rewards, terms, truncs = [obs], [], [], [], []
    for t in range(max_steps):
        action = env.action_space.sample()
        obs, reward, terminated, truncated, _ = env.step(action)
        truncated = truncated or t == max_steps - 1
        observations.append(obs)
        actions.append(action)
        rewards.append(float(reward))
        terms.append(bool(terminated))
        truncs.append(bool(truncated and not terminated))
        if terminated or truncated:
            break
    if end is not None:
        terms[-1], truncs[-1] = end == "terminated", end == "truncated"
    if isinstance(observations[0], dict):
        # Text entries (a MiniGrid mission) stay a list of str, as Minari stores them.
        stacked = {
            k: [o[k] for o in observations] if isinstance(v, str) else np.stack([o[k] for o in observations])
            for k, v in observations[0].items()
        }
    else:
        stacked = np.stack(observations)
    return EpisodeBuffer(
        seed=seed,
        observations=stacked,
        actions=np.stack(actions),
        rewards=np.asarray(rewards),
        terminations=np.asarray(terms),
        truncations=np.asarray(truncs),
    )


def _write_minari(
    dataset_id: str, buffers: list[EpisodeBuffer], env: Any, eval_env: Any, description: str, **scores: Any
) -> Path:
    """Write episode buffers as a Minari dataset with the tests' author metadata; its folder."""
    minari.create_dataset_from_buffers(
        dataset_id=dataset_id,
        buffer=buffers,
        env=env,
        eval_env=eval_env,
        algorithm_name="random",
        author="cql-runner tests",
        author_email="tests@example.invalid",
        code_permalink="https://example.invalid/cql-runner",
        description=description,
        **scores,
    )
    return get_dataset_path(dataset_id)


def make_minari_dataset(
    dataset_id: str,
    env_id: str = "Pendulum-v1",
    n_episodes: int = 4,
    max_steps: int = 50,
    seed: int = 0,
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
    dict_obs: bool = False,
    *,
    episode_ends: Sequence[str | None] | None = None,
) -> Path:
    """Write a random-action Minari dataset into the current MINARI_DATASETS_PATH.

    Episodes are seeded ``seed + i`` and end at the env's own termination/truncation or
    after ``max_steps`` steps (recorded as a truncation). ``dict_obs=True`` ignores
    ``env_id`` and uses :data:`DICT_ENV_ID`. ``episode_ends[i]`` ("terminated",
    "truncated" or None) forces the flags of episode i's last step. As in Minari, the
    reference scores are stored only when ``ref_max_score`` is given (a missing
    ``ref_min_score`` is then estimated from 2 random episodes).

    Returns the dataset folder (the one containing ``data/``).
    """
    env = gym.make(DICT_ENV_ID if dict_obs else env_id)
    ends = list(episode_ends) if episode_ends is not None else [None] * n_episodes
    if len(ends) != n_episodes:
        raise ValueError("episode_ends needs one entry per episode")
    buffers = [_rollout(env, seed + i, max_steps, ends[i]) for i in range(n_episodes)]
    env.close()
    scores = {"ref_min_score": ref_min_score, "ref_max_score": ref_max_score, "num_episodes_average_score": 2}
    return _write_minari(dataset_id, buffers, env.spec, env.spec, "tiny random dataset for tests", **scores)


def minari_arrays(dataset_id: str) -> dict[str, np.ndarray]:
    """A Minari dataset's steps, every episode concatenated: observations, actions, rewards and flags."""
    ds = minari.load_dataset(dataset_id)
    eps = [ds[i] for i in range(ds.total_episodes)]
    return {
        k: np.concatenate([np.asarray(getattr(ep, k)).reshape(len(getattr(ep, k)), -1) for ep in eps])
        for k in ("observations", "actions", "rewards", "terminations", "truncations")
    }


def make_d4rl_file(
    path: Path,
    episode_lengths: Sequence[int] = (5, 7, 4),
    episode_ends: Sequence[str | None] = ("terminal", "timeout", None),
    obs_dim: int = 3,
    act_dim: int = 2,
    with_next_observations: bool = False,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Write a D4RL-style hdf5 file and return the arrays written.

    Observations encode (episode, step) so tests can check transitions exactly:
    obs[t] = [100 * episode + step, ...]. ``episode_ends[i]`` flags the last step of
    episode i: "terminal", "timeout" or None (data cut mid-episode).
    """
    rng = np.random.default_rng(seed)
    obs, nxt, terminals, timeouts = [], [], [], []
    for e, (n, end) in enumerate(zip(episode_lengths, episode_ends)):
        steps = np.arange(n + 1, dtype=np.float32)
        ep_obs = np.stack([100 * e + steps] * obs_dim, axis=1)
        ep_obs[:, 1:] += rng.normal(size=(n + 1, obs_dim - 1)).astype(np.float32)
        obs.append(ep_obs[:-1])
        nxt.append(ep_obs[1:])
        term = np.zeros(n, bool)
        tout = np.zeros(n, bool)
        term[-1] = end == "terminal"
        tout[-1] = end == "timeout"
        terminals.append(term)
        timeouts.append(tout)
    total = sum(episode_lengths)
    arrays = {
        "observations": np.concatenate(obs),
        "actions": rng.uniform(-1, 1, (total, act_dim)).astype(np.float32),
        "rewards": rng.normal(size=total).astype(np.float32),
        "terminals": np.concatenate(terminals),
        "timeouts": np.concatenate(timeouts),
    }
    if with_next_observations:
        arrays["next_observations"] = np.concatenate(nxt)
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)
        f.create_dataset("infos/qpos", data=np.zeros((total, 2)))
    return arrays


FRAME_ENV_ID = "CqlRunnerFrames-v0"


class FrameEnv(gym.Env):
    """84×84 uint8 frames and 3 actions, like a preprocessed Atari screen: action 1 scores."""

    metadata: dict = {"render_modes": []}  # noqa: RUF012 (gymnasium's class attribute)

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(0, 255, (84, 84), np.uint8)
        self.action_space = gym.spaces.Discrete(3)
        self._t = 0

    def _frame(self) -> np.ndarray:
        return np.full((84, 84), (37 * self._t) % 256, np.uint8)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._t = int(self.np_random.integers(5))
        return self._frame(), {}

    def step(self, action):
        self._t += 1
        return self._frame(), float(action == 1), self._t >= 12, False, {}


if FRAME_ENV_ID not in gym.registry:
    gym.register(FRAME_ENV_ID, entry_point=f"{__name__}:FrameEnv", max_episode_steps=20)


def write_dqn_replay(
    folder: Path, checkpoints: int = 2, rows: int = 60, seed: int = 0, skip: tuple[str, int] | None = None
) -> Path:
    """A tiny DQN Replay Dataset checkpoint folder (gzipped .npy files as Dopamine writes them).

    ``skip=(field, N)`` leaves out one file, as a partial download would.
    """
    import gzip

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(checkpoints):
        arrays = {
            "observation": rng.integers(0, 256, (rows, 84, 84), dtype=np.uint8),
            "action": rng.integers(0, 3, rows).astype(np.int32),
            "reward": rng.choice([-1.0, 0.0, 1.0], rows).astype(np.float32),
            "terminal": (rng.random(rows) < 0.1).astype(np.uint8),
        }
        for name, array in arrays.items():
            if skip == (name, n):
                continue
            with gzip.open(folder / f"$store$_{name}_ckpt.{n}.gz", "wb") as f:
                np.save(f, array, allow_pickle=False)
    return folder


# MiniGrid FourRooms's spaces (Minari's D4RL/minigrid/fourrooms-v0): Dict of a Discrete(4) direction,
# a 7×7×3 uint8 image and a text mission, 7 actions.
GRID_ENV_ID = "CqlRunnerGrid-v0"
GRID_MISSION = "reach the goal"


def grid_observation_space() -> gym.spaces.Dict:
    charset = "abcdefghijklmnopqrstuvwxyz "
    return gym.spaces.Dict(
        {
            "direction": gym.spaces.Discrete(4),
            "image": gym.spaces.Box(0, 255, (7, 7, 3), np.uint8),
            "mission": gym.spaces.Text(max_length=14, min_length=1, charset=charset),
        }
    )


class GridEnv(gym.Env):
    """A stand-in for MiniGrid-FourRooms-v0 (same spaces) that needs no minigrid: action 2 scores."""

    metadata: dict = {"render_modes": []}  # noqa: RUF012 (gymnasium's class attribute)

    def __init__(self) -> None:
        self.observation_space = grid_observation_space()
        self.action_space = gym.spaces.Discrete(7)
        self._t = 0
        self._dir = 0

    def _obs(self) -> dict:
        image = np.full((7, 7, 3), self._t % 11, np.uint8)
        image[0, 0] = (self._dir, 5, 2)
        return {"direction": self._dir, "image": image, "mission": GRID_MISSION}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._t, self._dir = 0, int(self.np_random.integers(4))
        return self._obs(), {}

    def step(self, action):
        self._t += 1
        self._dir = (self._dir + (1 if action == 1 else -1 if action == 0 else 0)) % 4
        return self._obs(), float(action == 2), self._t >= 9, False, {}


if GRID_ENV_ID not in gym.registry:
    gym.register(GRID_ENV_ID, entry_point=f"{__name__}:GridEnv", max_episode_steps=100)


class _RecordedAs(gym.Env):
    """Spaces and an env spec, nothing else: Minari's writer makes the env of an EnvSpec it is given, so a
    dataset that records MiniGrid's or ALE's spec is written from this stand-in, without those packages."""

    def __init__(self, spec: EnvSpec, observation_space: gym.Space, action_space: gym.Space) -> None:
        self.spec = spec
        self.observation_space, self.action_space = observation_space, action_space


def make_minigrid_dataset(dataset_id: str = "D4RL/minigrid/fourrooms-v0", n_episodes: int = 4, seed: int = 0) -> Path:
    """A tiny Minari set with FourRooms's observation and action spaces, recorded from :class:`GridEnv`
    but with MiniGrid-FourRooms-v0's env spec (as the published set records it)."""
    env = gym.make(GRID_ENV_ID)
    buffers = [_rollout(env, seed + i, 12, None) for i in range(n_episodes)]
    env.close()
    spec = EnvSpec(id="MiniGrid-FourRooms-v0", entry_point="minigrid.envs:FourRoomsEnv")
    env_as = _RecordedAs(spec, grid_observation_space(), gym.spaces.Discrete(7))
    return _write_minari(dataset_id, buffers, env_as, spec, "tiny FourRooms-shaped dataset for tests")


def atari_screens(rng: np.random.Generator, n: int) -> np.ndarray:
    """n raw 210×160 RGB screens: flat colour blocks, so the 84×84 resize is not trivial."""
    blocks = rng.integers(0, 256, (n, 7, 5, 3), dtype=np.uint8)
    return np.repeat(np.repeat(blocks, 30, axis=1), 32, axis=2)


def make_atari_dataset(
    dataset_id: str = "atari/pong/expert-v0",
    episode_lengths: Sequence[int] = (9, 7, 8),
    seed: int = 0,
    n_actions: int = 6,
) -> Path:
    """A tiny Minari set shaped like Minari's atari/<game>/expert-v0: raw RGB screens, 6 actions (Pong's),
    the ALE/Pong-v5 spec the published sets record (frame skip 4, no sticky actions). The last
    episode is truncated, the others terminate."""
    rng = np.random.default_rng(seed)
    buffers = []
    for i, n in enumerate(episode_lengths):
        last = i == len(episode_lengths) - 1
        buffers.append(
            EpisodeBuffer(
                seed=seed + i,
                observations=atari_screens(rng, n + 1),
                actions=rng.integers(0, n_actions, n),
                rewards=rng.choice([-1.0, 0.0, 1.0], n),
                terminations=np.arange(n) == n - 1 if not last else np.zeros(n, bool),
                truncations=np.arange(n) == n - 1 if last else np.zeros(n, bool),
            )
        )
    spec = EnvSpec(
        id="ALE/Pong-v5",
        entry_point="ale_py.env:AtariEnv",
        max_episode_steps=27000,
        kwargs={
            "game": "pong",
            "obs_type": "rgb",
            "repeat_action_probability": 0,
            "full_action_space": False,
            "frameskip": 4,
            "max_num_frames_per_episode": 108000,
        },
    )
    screens = gym.spaces.Box(0, 255, (210, 160, 3), np.uint8)
    env_as = _RecordedAs(spec, screens, gym.spaces.Discrete(n_actions))
    return _write_minari(dataset_id, buffers, env_as, spec, "tiny Atari-shaped dataset for tests")
