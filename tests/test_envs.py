"""make_env / make_vector_env: the env ids we accept and the one-line errors for the rest."""

from __future__ import annotations

import importlib.util

import gymnasium as gym
import numpy as np
import pytest

from cql_runner.envs import EnvError, make_env, make_vector_env, suggest_env_ids


def test_make_env_box_and_time_limit_override() -> None:
    env = make_env("Pendulum-v1", max_episode_steps=7)
    try:
        assert isinstance(env.action_space, gym.spaces.Box)
        assert env.spec is not None and env.spec.max_episode_steps == 7
    finally:
        env.close()


@pytest.mark.parametrize(
    ("bad_id", "expected"),
    [
        ("Hoper-v5", "Hopper-v5"),
        ("pendulum-v1", "Pendulum-v1"),
        ("Hopper-v9", "Hopper-v5"),
    ],
)
def test_unknown_id_suggests_close_match(bad_id: str, expected: str) -> None:
    with pytest.raises(EnvError, match="unknown environment id") as info:
        make_env(bad_id)
    message = str(info.value)
    assert "\n" not in message
    assert expected in message
    assert expected in suggest_env_ids(bad_id)


def test_unknown_id_without_close_match() -> None:
    with pytest.raises(EnvError, match=r"unknown environment id 'Zzqxw-v0'$"):
        make_env("Zzqxw-v0")


def test_discrete_action_space_is_rejected() -> None:
    with pytest.raises(EnvError, match=r"CartPole-v1.*discrete action space.*continuous \(Box\)"):
        make_env("CartPole-v1")


def test_moved_mujoco_versions_give_one_line_error() -> None:
    # Hopper-v3 is registered but needs mujoco-py, which gymnasium 1.x no longer ships.
    with pytest.raises(EnvError, match="cannot build environment 'Hopper-v3'") as info:
        make_env("Hopper-v3")
    assert "\n" not in str(info.value)


@pytest.mark.skipif(
    importlib.util.find_spec("gymnasium_robotics") is not None, reason="gymnasium-robotics is installed"
)
@pytest.mark.parametrize(
    "env_id",
    [
        "AntMaze_UMaze-v5",
        "PointMaze_Medium-v3",
        "AdroitHandPen-v1",
        "FrankaKitchen-v1",
    ],
)
def test_robotics_ids_without_the_package_give_install_hint(env_id: str) -> None:
    with pytest.raises(EnvError, match=r'pip install "cql-runner\[robotics\]"'):
        make_env(env_id)


def test_make_vector_env_is_sync_with_n_copies() -> None:
    vec = make_vector_env("Pendulum-v1", 3, max_episode_steps=5)
    try:
        assert isinstance(vec, gym.vector.SyncVectorEnv)
        assert vec.num_envs == 3
        obs, _ = vec.reset(seed=[1, 2, 3])
        assert obs.shape == (3, 3)
        # Distinct env objects, or seeding one would seed them all.
        assert len({id(env) for env in vec.envs}) == 3
        assert not np.allclose(obs[0], obs[1])
    finally:
        vec.close()


def test_make_vector_env_bad_id_fails_once_with_our_error() -> None:
    with pytest.raises(EnvError, match="discrete"):
        make_vector_env("CartPole-v1", 4)
