"""The Cal-QL calibration bound and the returns-to-go it is measured against."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cql_runner.config import CQLConfig, NetworkConfig
from cql_runner.cql import losses
from cql_runner.cql.agent import CQLAgent
from cql_runner.cql.calibration import calibration_bound
from cql_runner.data.returns import episode_returns_to_go, returns_to_go
from cql_runner.data.types import Batch

K, NC, N, B = 2, 2, 3, 5
OBS, ACT = 3, 2


def _q(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(K, NC, N, B, generator=g, dtype=torch.float64)


def test_bound_matches_a_brute_force_loop() -> None:
    qp, qn = _q(1), _q(2)
    rtg = torch.randn(K, B, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    out = calibration_bound(q_policy=qp, q_next_policy=qn, returns_to_go=rtg)
    lifted = 0
    for k in range(K):
        for i in range(NC):
            for j in range(N):
                for b in range(B):
                    g = float(rtg[k, b])
                    assert float(out.q_policy[k, i, j, b]) == max(float(qp[k, i, j, b]), g)
                    assert float(out.q_next_policy[k, i, j, b]) == max(float(qn[k, i, j, b]), g)
    for k in range(K):
        lifted = sum(
            float(q[k, i, j, b]) < float(rtg[k, b])
            for q in (qp, qn)
            for i in range(NC)
            for j in range(N)
            for b in range(B)
        )
        assert float(out.lifted[k]) == pytest.approx(lifted / (2 * NC * N * B))


def test_bound_passes_gradient_only_where_q_is_above_the_return_to_go() -> None:
    qp, qn = _q(1).requires_grad_(), _q(2).requires_grad_()
    rtg = torch.zeros(K, B, dtype=torch.float64, requires_grad=True)
    out = calibration_bound(q_policy=qp, q_next_policy=qn, returns_to_go=rtg)
    weights_p, weights_n = _q(4), _q(5)
    ((out.q_policy * weights_p).sum() + (out.q_next_policy * weights_n).sum()).backward()
    torch.testing.assert_close(qp.grad, torch.where(qp > 0, weights_p, torch.zeros_like(weights_p)))
    torch.testing.assert_close(qn.grad, torch.where(qn > 0, weights_n, torch.zeros_like(weights_n)))
    assert rtg.grad is None  # the bound is a constant of the loss


def _agent(calibration: bool) -> CQLAgent:
    return CQLAgent(OBS, ACT, [0], NetworkConfig(hidden=[16, 16]), CQLConfig(n_actions=N, calibration=calibration))


def _batch(rtg: float) -> Batch:
    g = torch.Generator().manual_seed(7)
    return Batch(
        obs=torch.randn(1, B, OBS, generator=g),
        actions=torch.rand(1, B, ACT, generator=g) * 1.8 - 0.9,
        rewards=torch.randn(1, B, generator=g),
        next_obs=torch.randn(1, B, OBS, generator=g),
        terminals=torch.zeros(1, B),
        returns_to_go=torch.full((1, B), rtg),
    )


def _captured_gap_inputs(monkeypatch, agent: CQLAgent, batch: Batch) -> tuple[dict, dict]:
    seen: dict = {}
    real = losses.conservative_gap

    def spy(**kwargs):
        seen.update({name: kwargs[name] for name in ("q_uniform", "q_policy", "q_next_policy")})
        return real(**kwargs)

    monkeypatch.setattr(losses, "conservative_gap", spy)
    noise = agent.draw_noise(B)
    _, metrics = agent.compute_losses(batch, noise)
    return seen, metrics


def test_agent_bounds_the_policy_proposals_and_never_the_uniform_ones(monkeypatch) -> None:
    plain, _ = _captured_gap_inputs(monkeypatch, _agent(False), _batch(1e3))
    bounded, metrics = _captured_gap_inputs(monkeypatch, _agent(True), _batch(1e3))
    # Fresh critics give Q ≈ 0 << 1000: every policy proposal is lifted, no uniform one.
    torch.testing.assert_close(bounded["q_uniform"], plain["q_uniform"])
    assert torch.all(bounded["q_policy"] == 1e3) and torch.all(bounded["q_next_policy"] == 1e3)
    assert float(metrics["cql/calibration_lifted"][0]) == 1.0


def test_calibration_changes_critic_gradients_only_when_q_is_below_the_return_to_go() -> None:
    def critic_grads(calibration: bool, rtg: float) -> list[torch.Tensor]:
        agent = _agent(calibration)
        total, _ = agent.compute_losses(_batch(rtg), agent.draw_noise(B))
        return torch.autograd.grad(total, list(agent.critic.parameters()))

    base = critic_grads(False, 0.0)
    # A return-to-go far below every Q: the bound never binds, the gradients are unchanged.
    for a, b in zip(base, critic_grads(True, -1e6)):
        torch.testing.assert_close(a, b)
    # Far above every Q: the policy proposals stop pushing Q down, the gradients change.
    assert max((a - b).abs().max().item() for a, b in zip(base, critic_grads(True, 1e6))) > 1e-6


def test_calibration_off_during_a_phase_and_without_returns_is_refused() -> None:
    agent = _agent(True)
    agent.set_calibration(False)
    _, metrics = agent.compute_losses(_batch(1e3), agent.draw_noise(B))
    assert "cql/calibration_lifted" not in metrics
    agent.set_calibration(True)
    with pytest.raises(ValueError, match="returns_to_go"):
        agent.compute_losses(_batch(0.0)._replace(returns_to_go=None), agent.draw_noise(B))


# ----- returns-to-go ----------------------------------------------------------------------
def _brute_rtg(rewards: list[float], discount: float) -> list[float]:
    return [sum(discount ** (j - t) * rewards[j] for j in range(t, len(rewards))) for t in range(len(rewards))]


@pytest.mark.parametrize("ending", ["terminated", "truncated"])
def test_returns_to_go_against_brute_force(ending: str) -> None:
    # A terminated episode ends its sum exactly; a truncated one is cut where the limit fell:
    # the same formula, the episode's own end.
    rewards = [0.5, -1.0, 2.0, 3.5, 0.25]
    got = episode_returns_to_go(rewards=np.asarray(rewards), discount=0.9)
    np.testing.assert_allclose(got, _brute_rtg(rewards, 0.9), rtol=1e-6)


def test_sparse_episode_that_never_reaches_the_goal_gets_r_neg_over_one_minus_gamma() -> None:
    failed = episode_returns_to_go(rewards=np.full(4, -5.0), discount=0.99, sparse_reward_neg=-5.0)
    np.testing.assert_allclose(failed, np.full(4, -500.0), rtol=1e-6)
    # One step at the goal: an ordinary discounted sum.
    reached = [-5.0, -5.0, 5.0]
    got = episode_returns_to_go(rewards=np.asarray(reached), discount=0.99, sparse_reward_neg=-5.0)
    np.testing.assert_allclose(got, _brute_rtg(reached, 0.99), rtol=1e-6)
    # Without the setting the failed episode is summed like any other.
    plain = episode_returns_to_go(rewards=np.full(4, -5.0), discount=0.99)
    np.testing.assert_allclose(plain, _brute_rtg([-5.0] * 4, 0.99), rtol=1e-6)


def test_flat_returns_to_go_restart_at_every_episode() -> None:
    rewards = np.asarray([1.0, 2.0, 0.0, 0.0, 3.0, 1.0], np.float32)
    got = returns_to_go(rewards=rewards, episode_starts=np.asarray([0, 2, 4]), discount=0.5, sparse_reward_neg=0.0)
    want = [*_brute_rtg([1.0, 2.0], 0.5), 0.0, 0.0, *_brute_rtg([3.0, 1.0], 0.5)]
    np.testing.assert_allclose(got, want, rtol=1e-6)


# ----- configuration ----------------------------------------------------------------------
def test_calql_preset_and_sparse_registry_entries(compose_cfg) -> None:
    from cql_runner.data.transforms import sparse_reward_neg

    assert compose_cfg(["cql=calql"]).cql.calibration is True
    assert compose_cfg([]).cql.calibration is False
    antmaze = compose_cfg(["env=antmaze-umaze", "cql=calql"])
    assert antmaze.cql.calibration is True and antmaze.env.sparse_reward_neg == 0.0
    assert sparse_reward_neg(antmaze.env) == -5.0  # r * 10 - 5: the failed episode's -500 at γ 0.99
    assert compose_cfg(["env=door-human"]).env.sparse_reward_neg == -1.0
    assert sparse_reward_neg(compose_cfg(["env=hopper-medium"]).env) is None


def test_sparse_setting_reaches_the_sampled_returns_to_go() -> None:
    from cql_runner.data.buffer import DeviceSampler
    from cql_runner.data.types import DatasetMeta, OfflineData

    t = 6
    obs = np.zeros((t, 2), np.float32)
    rewards = np.asarray([-5, -5, -5, -5, 5, -5], np.float32)
    data = OfflineData(
        obs,
        np.zeros((t, 1), np.float32),
        rewards,
        obs,
        np.zeros(t, np.float32),
        np.zeros(t, np.float32),
        np.asarray([0, 3]),
        DatasetMeta("x"),
    )
    sparse = DeviceSampler(data, [0], "cpu", discount=0.9, sparse_reward_neg=-5.0)
    plain = DeviceSampler(data, [0], "cpu", discount=0.9)
    np.testing.assert_allclose(sparse.returns_to_go[:3].numpy(), [-50.0] * 3, rtol=1e-6)
    np.testing.assert_allclose(plain.returns_to_go[:3].numpy(), _brute_rtg([-5.0] * 3, 0.9), rtol=1e-6)
    np.testing.assert_allclose(sparse.returns_to_go[3:].numpy(), _brute_rtg([-5.0, 5.0, -5.0], 0.9), rtol=1e-6)
    batch = sparse.sample(4)
    torch.testing.assert_close(batch.returns_to_go, sparse.returns_to_go[sparse.last_indices])
