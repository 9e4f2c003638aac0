"""CQLAgent acting: deterministic actions and Q-values of raw observations."""

from __future__ import annotations

import numpy as np
import torch
from agent_helpers import (
    ACT,
    HIDDEN,
    N_ACT,
    OBS,
    make_agent,
)

from cql_runner.config import CQLConfig, NetworkConfig
from cql_runner.cql.agent import CQLAgent


def test_act_shape_range_and_obs_normalisation():
    mean = np.array([10.0, -5.0, 2.0], np.float32)
    std = np.array([2.0, 0.5, 4.0], np.float32)
    agent = CQLAgent(
        OBS, ACT, [0, 1], NetworkConfig(hidden=HIDDEN), CQLConfig(n_actions=N_ACT), obs_mean=mean, obs_std=std
    )
    plain = make_agent(seeds=[0, 1])
    obs = np.random.default_rng(0).normal(size=(2, 4, OBS)).astype(np.float32) * std + mean
    act = agent.act(obs)
    assert act.shape == (2, 4, ACT) and act.dtype == np.float32
    assert np.all(np.abs(act) <= 1.0)
    with torch.no_grad():
        m, _ = plain.actor(torch.as_tensor((obs - mean) / std))
    np.testing.assert_allclose(act, torch.tanh(m).numpy(), rtol=1e-5, atol=1e-6)
    assert np.abs(plain.act(obs) - act).max() > 1e-3  # normalisation made a difference
    # extreme observations still give actions inside [-1, 1]
    huge = agent.act(np.full((2, 3, OBS), 1e6, np.float32))
    assert np.all(np.abs(huge) <= 1.0) and np.all(np.isfinite(huge))


def test_q_value_is_min_over_critics_of_normalised_obs():
    mean = np.array([1.0, 2.0, 3.0], np.float32)
    std = np.array([2.0, 2.0, 2.0], np.float32)
    agent = CQLAgent(
        OBS, ACT, [0], NetworkConfig(hidden=HIDDEN), CQLConfig(n_actions=N_ACT), obs_mean=mean, obs_std=std
    )
    obs = np.random.default_rng(1).normal(size=(1, 5, OBS)).astype(np.float32)
    a = np.random.default_rng(2).uniform(-1, 1, size=(1, 5, ACT)).astype(np.float32)
    q = agent.q_value(obs, a)
    with torch.no_grad():
        ref = agent.critic(torch.as_tensor((obs - mean) / std), torch.as_tensor(a)).min(1).values
    assert q.shape == (1, 5)
    np.testing.assert_allclose(q, ref.numpy(), rtol=1e-5, atol=1e-6)
