"""The discrete CQL math against brute-force loops on tiny shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cql_runner.discrete import losses
from cql_runner.discrete.nstep import n_step_transitions


def _q(k: int = 2, b: int = 5, a: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(k, b, a, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("temperature", [1.0, 0.5, 3.0])
def test_gap_is_the_exact_logsumexp_minus_the_data_q(temperature: float) -> None:
    q = _q()
    actions = torch.randint(3, (2, 5), generator=torch.Generator().manual_seed(1))
    out = losses.conservative_gap(q_values=q, actions=actions, temperature=temperature)
    for k in range(2):
        lse = [
            temperature * math.log(sum(math.exp(float(q[k, b, a]) / temperature) for a in range(3))) for b in range(5)
        ]
        data = [float(q[k, b, actions[k, b]]) for b in range(5)]
        assert out.logsumexp[k].item() == pytest.approx(np.mean(lse), rel=1e-5)
        assert out.q_data[k].item() == pytest.approx(np.mean(data), rel=1e-5)
        assert out.gap[k].item() == pytest.approx(np.mean(lse) - np.mean(data), rel=1e-5, abs=1e-6)


def test_gap_gradient_raises_dataset_actions_and_lowers_the_rest() -> None:
    q = _q(k=1, b=4, a=4).requires_grad_(True)
    actions = torch.tensor([[0, 1, 2, 3]])
    losses.conservative_gap(q_values=q, actions=actions).gap.sum().backward()
    grad = q.grad[0]
    # Gradient descent moves Q against the gradient: up where it is negative.
    for b in range(4):
        for a in range(4):
            assert (grad[b, a] < 0) if a == actions[0, b] else (grad[b, a] > 0)


def test_double_dqn_target_uses_online_argmax_and_target_value() -> None:
    online, target = _q(seed=2), _q(seed=3)
    rewards, discounts = torch.rand(2, 5), torch.rand(2, 5)
    y = losses.double_dqn_target(rewards=rewards, discounts=discounts, next_q_online=online, next_q_target=target)
    for k in range(2):
        for b in range(5):
            a = int(np.argmax(online[k, b].numpy()))
            assert y[k, b].item() == pytest.approx(float(rewards[k, b] + discounts[k, b] * target[k, b, a]))


def test_td_losses() -> None:
    q, y = torch.tensor([[0.0, 3.0]]), torch.tensor([[0.5, 0.0]])
    assert losses.td_loss(q_data=q, target=y, kind="mse").item() == pytest.approx((0.25 + 9.0) / 4)
    # Huber(δ=1): ½x² inside, |x| − ½ outside.
    assert losses.td_loss(q_data=q, target=y, kind="huber").item() == pytest.approx((0.125 + 2.5) / 2)


def test_quantile_huber_loss_matches_a_loop() -> None:
    g = torch.Generator().manual_seed(4)
    theta, target = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    kappa = 0.7
    out = losses.quantile_huber_loss(quantiles=theta, target=target, kappa=kappa)
    n = 4
    for k in range(2):
        per_sample = []
        for b in range(3):
            total = 0.0
            for i in range(n):
                tau = (2 * i + 1) / (2 * n)
                terms = []
                for j in range(n):
                    u = float(target[k, b, j] - theta[k, b, i])
                    h = 0.5 * u * u if abs(u) <= kappa else kappa * (abs(u) - 0.5 * kappa)
                    terms.append(abs(tau - (1.0 if u < 0 else 0.0)) * h / kappa)
                total += np.mean(terms)
            per_sample.append(total)
        assert out[k].item() == pytest.approx(np.mean(per_sample), rel=1e-5)


def test_qr_target_picks_the_action_with_the_best_mean() -> None:
    g = torch.Generator().manual_seed(5)
    online, target = torch.randn(1, 2, 3, 4, generator=g), torch.randn(1, 2, 3, 4, generator=g)
    rewards, discounts = torch.tensor([[1.0, -1.0]]), torch.tensor([[0.9, 0.0]])
    y = losses.qr_double_dqn_target(
        rewards=rewards, discounts=discounts, next_quantiles_online=online, next_quantiles_target=target
    )
    for b in range(2):
        a = int(online[0, b].mean(-1).argmax())
        assert torch.allclose(y[0, b], rewards[0, b] + discounts[0, b] * target[0, b, a])


def _brute_n_step(rewards, terminals, starts, gamma, n):
    size = len(rewards)
    ends = [*starts[1:], size]
    out = []
    for s, e in zip(starts, ends):
        for t in range(s, e):
            ret, m = 0.0, 0
            for k in range(n):
                if t + k >= e:
                    break
                ret += gamma**k * rewards[t + k]
                m = k + 1
                if terminals[t + k]:
                    break
            last = t + m - 1
            out.append((ret, last, gamma**m * (0.0 if terminals[last] else 1.0)))
    return out


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_n_step_matches_a_loop_across_terminations_and_truncations(n: int) -> None:
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=12).astype(np.float32)
    # Episodes [0, 4) terminates at 3; [4, 9) is truncated (no terminal); [9, 12) terminates at 10
    # (a terminal mid-episode, as a buggy log might hold) and runs on to the data's end.
    terminals = np.zeros(12, np.float32)
    terminals[[3, 10]] = 1
    starts = np.array([0, 4, 9])
    got = n_step_transitions(rewards=rewards, terminals=terminals, episode_starts=starts, discount=0.9, n=n)
    for t, (ret, last, disc) in enumerate(_brute_n_step(rewards, terminals, starts, 0.9, n)):
        assert got.returns[t] == pytest.approx(ret, rel=1e-5)
        assert got.bootstrap_index[t] == last
        assert got.discounts[t] == pytest.approx(disc, rel=1e-6)


def test_bc_cross_entropy_is_the_mean_negative_log_softmax_of_the_dataset_actions() -> None:
    logits = _q(k=2, b=5, a=4, seed=3)
    actions = torch.randint(4, (2, 5), generator=torch.Generator().manual_seed(4))
    out = losses.bc_cross_entropy(logits=logits, actions=actions)
    for k in range(2):
        nll, hits = [], []
        for b in range(5):
            row = [float(x) for x in logits[k, b]]
            a = int(actions[k, b])
            nll.append(-(row[a] - math.log(sum(math.exp(x) for x in row))))
            hits.append(float(max(range(4), key=lambda j: row[j]) == a))
        assert out.loss[k].item() == pytest.approx(np.mean(nll), rel=1e-5)
        assert out.accuracy[k].item() == pytest.approx(np.mean(hits))
    # Its gradient raises the dataset action's logit and lowers every other one.
    x = logits[:1, :1].clone().requires_grad_(True)
    losses.bc_cross_entropy(logits=x, actions=actions[:1, :1]).loss.sum().backward()
    assert x.grad is not None
    a = int(actions[0, 0])
    assert x.grad[0, 0, a] < 0 and all(x.grad[0, 0, j] > 0 for j in range(4) if j != a)
