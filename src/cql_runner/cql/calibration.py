"""The Cal-QL calibration bound (Nakamoto et al., NeurIPS 2023), as a pure function of tensors.

Cal-QL changes one thing in the CQL term: the Q-values of the policy's own proposals, π(s) and
π(s′) (both evaluated at s), are bounded below by the behaviour policy's discounted
return-to-go of the same transition before they enter the logsumexp. Where Q already exceeds
the return-to-go nothing changes; where it is below, the proposal stops pushing Q down, so the
learned Q is not driven under the value of the data it was trained on. The uniform proposals
are left alone: they are not the policy's actions and the bound says nothing about them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class CalibratedProposals(NamedTuple):
    q_policy: Tensor  # (K, n, N, B): max(Q_i(s, a~π(s)), G(s, a))
    q_next_policy: Tensor  # (K, n, N, B): max(Q_i(s, a~π(s′)), G(s, a))
    lifted: Tensor  # (K,): share of the policy proposals the bound raised (a diagnostic)


def calibration_bound(*, q_policy: Tensor, q_next_policy: Tensor, returns_to_go: Tensor) -> CalibratedProposals:
    """Q ← max(Q, G) for the π(s) and π(s′) proposals.

    ``q_policy``, ``q_next_policy``: (K, n, N, B), critic i at s for N actions from π(·|s) and
    π(·|s′). ``returns_to_go``: (K, B), the Monte-Carlo return G of each batch transition,
    broadcast over critics and samples. G carries no gradient; where Q < G the bounded value is
    G, so no gradient reaches that Q through the conservative term.
    """
    bound = returns_to_go.detach().to(q_policy.dtype)[:, None, None, :]
    policy = torch.maximum(q_policy, bound)
    next_policy = torch.maximum(q_next_policy, bound)
    lifted = torch.cat([(q_policy < bound), (q_next_policy < bound)], dim=2).float().mean(dim=(1, 2, 3))
    return CalibratedProposals(q_policy=policy, q_next_policy=next_policy, lifted=lifted)
