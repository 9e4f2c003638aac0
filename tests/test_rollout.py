"""The shared stepping loop: seeding, early stops, recording, action scaling, Dict obs."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from cql_runner.data.spaces import flatten_obs, to_unit_actions
from cql_runner.envs import EnvError, make_vector_env
from cql_runner.rollout import env_seeds, rollout, run_episodes

PENDULUM_LOW = np.array([-2.0], dtype=np.float32)
PENDULUM_HIGH = np.array([2.0], dtype=np.float32)


# ---------------------------------------------------------------- test-only envs


class DictGoalEnv(gym.Env):
    """Dict observations whose keys are declared out of the documented flattening order."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Dict(
            {
                "zeta": gym.spaces.Box(-np.inf, np.inf, (1,), np.float64),
                "desired_goal": gym.spaces.Box(-np.inf, np.inf, (2,), np.float64),
                "observation": gym.spaces.Box(-np.inf, np.inf, (3,), np.float64),
                "achieved_goal": gym.spaces.Box(-np.inf, np.inf, (2,), np.float64),
            }
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.t = 0
        self.offset = 0.0

    def _obs(self) -> dict[str, np.ndarray]:
        # Each entry is recognisable: observation ~ t, achieved ~ 100 + t, desired ~ 200 + t.
        t = float(self.t) + self.offset
        return {
            "zeta": np.array([300.0 + t]),
            "desired_goal": np.array([200.0 + t, 201.0 + t]),
            "observation": np.array([t, t + 0.1, t + 0.2]),
            "achieved_goal": np.array([100.0 + t, 101.0 + t]),
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.t = 0
        self.offset = float(self.np_random.integers(0, 10)) / 1000
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
        self.t += 1
        return self._obs(), float(np.sum(action)), False, False, {}


class StrictTerminatingEnv(gym.Env):
    """Terminates after a seed-dependent number of steps; stepping it afterwards is an error."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.t, self.done = 0, False
        self.horizon = 2 + int(self.np_random.integers(0, 6))
        return np.zeros(1, np.float32), {}

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
        if self.done:
            raise AssertionError("stepped after termination")
        self.t += 1
        self.done = self.t >= self.horizon
        return np.full(1, self.t, np.float32), 1.0, self.done, False, {}


class EndlessEnv(StrictTerminatingEnv):
    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
        return np.zeros(1, np.float32), 0.0, False, False, {}


for _id, _entry, _limit in [
    ("CqlTest/DictGoal-v0", DictGoalEnv, 6),
    ("CqlTest/StrictTerminating-v0", StrictTerminatingEnv, 50),
    ("CqlTest/Endless-v0", EndlessEnv, None),
]:
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=_entry, max_episode_steps=_limit)


# ---------------------------------------------------------------- policies


def constant_policy(value: float, act_dim: int = 1):
    def policy(obs: np.ndarray) -> np.ndarray:
        return np.full((*obs.shape[:2], act_dim), value, dtype=np.float32)

    return policy


def linear_policy(act_dim: int, seed: int = 0):
    """Deterministic, observation-dependent, and row-independent (no cross-batch effects)."""
    rng = np.random.default_rng(seed)
    weights = None

    def policy(obs: np.ndarray) -> np.ndarray:
        nonlocal weights
        if weights is None:
            weights = rng.normal(size=(obs.shape[-1], act_dim))
        return np.tanh(obs.astype(np.float64) @ weights * 3.0).astype(np.float32)

    return policy


def pendulum_reference(seed: int, action: float, steps: int) -> float:
    """Brute force: step one plain gymnasium env by hand."""
    env = gym.make("Pendulum-v1", max_episode_steps=steps)
    env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        _, reward, term, trunc, _ = env.step(np.array([action], dtype=np.float32))
        total += float(reward)
        done = term or trunc
    env.close()
    return total


# ---------------------------------------------------------------- tests


def test_env_seeds_formula() -> None:
    assert env_seeds([3, 7], 2) == [30_000, 30_001, 70_000, 70_001]
    assert env_seeds([3], 2, seed_offset=100) == [30_100, 30_101]
    with pytest.raises(ValueError, match="seed_offset"):
        env_seeds([0], 10, seed_offset=9_995)


def test_constant_policy_matches_single_env_by_hand() -> None:
    seeds, e, steps = [4, 9], 3, 40
    result = run_episodes(
        "Pendulum-v1", constant_policy(0.25), seeds, e, None, PENDULUM_LOW, PENDULUM_HIGH, max_episode_steps=steps
    )
    assert result.returns.shape == (2, 3) and result.lengths.shape == (2, 3)
    for k, base in enumerate(seeds):
        for ep in range(e):
            # Unit 0.25 is 0.5 in Pendulum's [-2, 2].
            expected = pendulum_reference(base * 10_000 + ep, 0.5, steps)
            assert result.returns[k, ep] == pytest.approx(expected, rel=1e-12, abs=1e-9)


def test_agents_together_equal_agents_alone() -> None:
    policy = linear_policy(act_dim=1)
    together = run_episodes("Pendulum-v1", policy, [1, 2], 2, None, PENDULUM_LOW, PENDULUM_HIGH, max_episode_steps=30)
    for k, seed in enumerate([1, 2]):
        alone = run_episodes("Pendulum-v1", policy, [seed], 2, None, PENDULUM_LOW, PENDULUM_HIGH, max_episode_steps=30)
        np.testing.assert_array_equal(alone.returns[0], together.returns[k])
        np.testing.assert_array_equal(alone.lengths[0], together.lengths[k])
    # Different base seeds really are different episodes.
    assert not np.allclose(together.returns[0], together.returns[1])


def test_time_limit_lengths_and_truncation_flags() -> None:
    result = run_episodes(
        "Pendulum-v1", linear_policy(1), [0], 3, None, PENDULUM_LOW, PENDULUM_HIGH, max_episode_steps=25, record=True
    )
    np.testing.assert_array_equal(result.lengths, np.full((1, 3), 25))
    for ep in result.episodes:
        assert ep.length == 25
        assert ep.truncations[-1] and not ep.truncations[:-1].any()
        assert not ep.terminations.any()


def test_default_time_limit_is_the_envs_own() -> None:
    result = run_episodes("Pendulum-v1", constant_policy(0.0), [0], 1, None, None, None)
    assert result.lengths[0, 0] == 200


def test_finished_envs_are_not_stepped_again() -> None:
    result = run_episodes(
        "CqlTest/StrictTerminating-v0", constant_policy(0.0), [0, 1, 2], 4, None, None, None, record=True
    )
    assert result.lengths.min() < result.lengths.max()  # the horizons really differ
    np.testing.assert_array_equal(result.returns, result.lengths.astype(float))
    for ep in result.episodes:
        assert ep.terminations[-1] and not ep.terminations[:-1].any()


def test_hopper_terminates_early_and_stops_stepping() -> None:
    cap = 300
    vec = make_vector_env("Hopper-v5", 4, max_episode_steps=cap)
    try:
        result = rollout(vec, linear_policy(act_dim=3, seed=1), [0, 1], 2, record=True)
        # The TimeLimit wrapper counts every step an env received.
        elapsed = [env.get_wrapper_attr("_elapsed_steps") for env in vec.envs]
    finally:
        vec.close()
    assert (result.lengths < cap).all()
    np.testing.assert_array_equal(np.array(elapsed), result.lengths.reshape(-1))
    for ep in result.episodes:
        assert ep.terminations[-1] and not ep.terminations[:-1].any()
        assert not ep.truncations.any()


def test_recorded_trajectories_replay_exactly() -> None:
    result = run_episodes(
        "Pendulum-v1",
        linear_policy(1, seed=3),
        [5],
        2,
        None,
        PENDULUM_LOW,
        PENDULUM_HIGH,
        max_episode_steps=20,
        record=True,
    )
    assert len(result.episodes) == 2
    for ep in result.episodes:
        assert ep.obs.shape == (ep.length + 1, 3)
        assert ep.actions.shape == ep.unit_actions.shape == (ep.length, 1)
        assert (ep.actions >= -2.0).all() and (ep.actions <= 2.0).all()
        assert (np.abs(ep.unit_actions) <= 1.0).all()
        np.testing.assert_allclose(to_unit_actions(ep.actions, PENDULUM_LOW, PENDULUM_HIGH), ep.unit_actions, atol=1e-6)
        assert ep.episode_return == pytest.approx(result.returns[ep.agent, ep.index])
        np.testing.assert_array_equal(ep.next_observations, ep.obs[1:])
        # Replaying the recorded actions from the recorded seed reproduces obs and rewards.
        env = gym.make("Pendulum-v1", max_episode_steps=20)
        first, _ = env.reset(seed=ep.seed)
        np.testing.assert_array_equal(first, ep.obs[0])
        for t in range(ep.length):
            obs, reward, *_ = env.step(ep.actions[t])
            np.testing.assert_array_equal(obs, ep.obs[t + 1])
            assert reward == ep.rewards[t]
        env.close()


@pytest.mark.parametrize(("unit", "env_value"), [(1.0, 2.0), (-1.0, -2.0), (0.0, 0.0), (3.0, 2.0)])
def test_unit_actions_map_to_env_bounds(unit: float, env_value: float) -> None:
    result = run_episodes(
        "Pendulum-v1",
        constant_policy(unit),
        [0],
        1,
        None,
        PENDULUM_LOW,
        PENDULUM_HIGH,
        max_episode_steps=3,
        record=True,
    )
    ep = result.episodes[0]
    np.testing.assert_array_equal(ep.actions, np.full((3, 1), env_value, np.float32))
    np.testing.assert_array_equal(ep.unit_actions, np.full((3, 1), min(unit, 1.0), np.float32))


def test_env_bounds_are_used_when_none_given() -> None:
    result = run_episodes(
        "Pendulum-v1", constant_policy(1.0), [0], 1, None, None, None, max_episode_steps=2, record=True
    )
    assert (result.episodes[0].actions == 2.0).all()


def test_dict_observations_reach_the_policy_in_flatten_order() -> None:
    seen: list[np.ndarray] = []

    def policy(obs: np.ndarray) -> np.ndarray:
        seen.append(obs.copy())
        return np.zeros((*obs.shape[:2], 2), np.float32)

    result = run_episodes("CqlTest/DictGoal-v0", policy, [0, 1], 2, None, None, None, record=True)
    assert len(seen) == 6  # one policy call per vector step
    first = seen[0]
    assert first.shape == (2, 2, 8) and first.dtype == np.float32
    # observation, achieved_goal, desired_goal, then the rest sorted.
    row = first[0, 0]
    np.testing.assert_allclose(row[:3] - row[0], [0.0, 0.1, 0.2], atol=1e-6)
    np.testing.assert_allclose(row[3:5] - row[0], [100.0, 101.0], atol=1e-4)
    np.testing.assert_allclose(row[5:7] - row[0], [200.0, 201.0], atol=1e-4)
    np.testing.assert_allclose(row[7:] - row[0], [300.0], atol=1e-4)
    for ep in result.episodes:
        assert set(ep.obs) == {"observation", "achieved_goal", "desired_goal", "zeta"}
        assert ep.obs["observation"].shape == (ep.length + 1, 3)
        flat = ep.flat_obs()
        for t in range(ep.length):
            np.testing.assert_array_equal(seen[t][ep.agent, ep.index], flat[t])
        np.testing.assert_array_equal(flat, flatten_obs(ep.obs, None))

    # An explicit key order (the dataset's) is honoured.
    seen.clear()
    keys = ["desired_goal", "observation"]
    run_episodes("CqlTest/DictGoal-v0", policy, [0], 1, keys, None, None)
    assert seen[0].shape == (1, 1, 5)
    np.testing.assert_allclose(seen[0][0, 0, :2] - seen[0][0, 0, 2], [200.0, 201.0], atol=1e-4)


def test_bad_policy_output_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"shape \(1, 2\); expected \(1, 2, 1\)"):
        run_episodes("Pendulum-v1", lambda obs: np.zeros((1, 2)), [0], 2, None, None, None)
    with pytest.raises(ValueError, match="non-finite"):
        run_episodes("Pendulum-v1", constant_policy(np.nan), [0], 1, None, None, None)


def test_mismatched_action_bounds_and_missing_time_limit() -> None:
    with pytest.raises(ValueError, match="action bounds have shapes"):
        run_episodes("Pendulum-v1", constant_policy(0.0), [0], 1, None, np.zeros(3), np.ones(3))
    with pytest.raises(EnvError, match="no time limit"):
        run_episodes("CqlTest/Endless-v0", constant_policy(0.0), [0], 1, None, None, None)
