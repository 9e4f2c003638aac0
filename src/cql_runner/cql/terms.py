"""The named terms of one CQL step, the loss they sum to, and the metrics built from them.

The agent computes the terms (cql/agent.py); this module is the one place that says how they
add up to the minimised loss and which metric name each one is logged under.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from cql_runner.cql.losses import ConservativeGap, CQLPenalty


class CriticTerms(NamedTuple):
    """The critic side of a step, per agent."""

    target: Tensor  # (K, B): the TD target y
    q_data: Tensor  # (K, n, B): Q_i(s, a_data)
    td: Tensor  # (K, n): ½·mean((Q_i(s,a) − y)²)
    gap: ConservativeGap
    cql: CQLPenalty
    # (K,): share of the policy proposals the Cal-QL bound raised; None without calibration.
    calibration_lifted: Tensor | None = None

    @property
    def loss(self) -> Tensor:
        """Σ_i td_i + cql_i, (K,)."""
        return (self.td + self.cql.penalty).sum(-1)


class ActorTerms(NamedTuple):
    """The actor side of a step, per agent."""

    loss: Tensor  # (K,): the actor loss (SAC, or BC during the warm start)
    alpha_loss: Tensor  # (K,): the entropy temperature's loss (zeros without auto_entropy)
    entropy_alpha: Tensor  # (K,): α, detached
    log_prob: Tensor  # (K, B): log π(ã|s) of the reparameterised action
    q_policy_min: Tensor  # (K, B): min_i Q_i(s, ã)


def total_loss(critic: CriticTerms, actor: ActorTerms) -> Tensor:
    """The one scalar a step minimises: every loss of every agent. The losses touch disjoint
    parameters (the actor sees detached critics, the dual sees a detached gap), so one backward
    gives each parameter exactly its own loss's gradient."""
    return (critic.loss + actor.loss + actor.alpha_loss + critic.cql.alpha_prime_loss).sum()


def step_metrics(critic: CriticTerms, actor: ActorTerms) -> dict[str, Tensor]:
    """Every logged metric of a step, per agent (K,), detached: the names in metrics.jsonl."""
    metrics = {
        "loss/critic": critic.loss,
        "loss/td": critic.td.mean(-1),
        "loss/cql": critic.cql.penalty.mean(-1),
        "loss/actor": actor.loss,
        "loss/alpha": actor.alpha_loss,
        "loss/alpha_prime": critic.cql.alpha_prime_loss,
        "alpha": actor.entropy_alpha,
        "alpha_prime": critic.cql.alpha_prime,
        "cql/gap": critic.gap.gap.mean(-1),
        "cql/ood_logsumexp": critic.gap.ood.mean(-1),
        "q/data": critic.q_data.mean(dim=(1, 2)),
        "q/policy": actor.q_policy_min.mean(-1),
        "q/target": critic.target.mean(-1),
        "policy/entropy": -actor.log_prob.mean(-1),
    }
    if critic.calibration_lifted is not None:
        metrics["cql/calibration_lifted"] = critic.calibration_lifted
    return {name: value.detach() for name, value in metrics.items()}
