"""The device sampler and the Monte-Carlo return diagnostic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cql_runner.data.buffer import DeviceSampler
from cql_runner.data.types import DatasetMeta, OfflineData


def _data(rewards: list[float], starts: list[int]) -> OfflineData:
    t = len(rewards)
    obs = np.arange(t, dtype=np.float32)[:, None].repeat(2, 1)
    return OfflineData(
        obs,
        np.zeros((t, 1), np.float32),
        np.asarray(rewards, np.float32),
        obs + 1,
        np.zeros(t, np.float32),
        np.zeros(t, np.float32),
        np.asarray(starts),
        DatasetMeta("x"),
    )


def test_returns_to_go_stop_at_episode_boundaries() -> None:
    data = _data([1.0, 2.0, 3.0, 10.0, 20.0], [0, 3])
    rtg = data.returns_to_go(0.5)
    np.testing.assert_allclose(rtg, [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3, 10 + 0.5 * 20, 20])


def test_sampler_batches_are_per_seed_and_reproducible() -> None:
    data = _data([float(i) for i in range(50)], [0, 25])
    a = DeviceSampler(data, [0, 1], "cpu", discount=0.9)
    b = DeviceSampler(data, [0, 1], "cpu", discount=0.9)
    single = DeviceSampler(data, [1], "cpu", discount=0.9)
    batch_a, batch_b, batch_1 = a.sample(8), b.sample(8), single.sample(8)
    assert batch_a.obs.shape == (2, 8, 2) and batch_a.rewards.shape == (2, 8)
    torch.testing.assert_close(batch_a.obs, batch_b.obs)
    torch.testing.assert_close(batch_a.obs[1], batch_1.obs[0])  # seed 1's stream is its own
    # The rows stay aligned: next_obs = obs + 1 and reward = index in this synthetic data.
    torch.testing.assert_close(batch_a.next_obs, batch_a.obs + 1)
    torch.testing.assert_close(batch_a.rewards, batch_a.obs[..., 0])
    rtg = torch.as_tensor(data.returns_to_go(0.9))
    torch.testing.assert_close(a.last_mc_returns(), rtg[a.last_indices].mean(-1))


def test_sampler_state_round_trip_continues_the_stream() -> None:
    data = _data([0.0] * 30, [0])
    s = DeviceSampler(data, [3], "cpu")
    s.sample(4)
    state = s.state_dict()
    expected = s.sample(4).obs
    s.load_state_dict(state)
    torch.testing.assert_close(s.sample(4).obs, expected)
    assert s.last_mc_returns() is None


def test_sampler_holds_one_float32_copy_of_the_data() -> None:
    data = _data([0.0] * 1000, [0])
    s = DeviceSampler(data, [0], "cpu")
    arrays = (data.observations, data.actions, data.rewards, data.next_observations, data.terminals)
    assert s.nbytes() == pytest.approx(sum(x.astype(np.float32).nbytes for x in arrays))
