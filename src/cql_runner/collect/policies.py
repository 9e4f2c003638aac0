"""Behaviour policies as rollout callables, the seed streams, and seeded mean returns.

Every random number in cql-collect comes from a stream named here, so one (seed, config)
always gives the same dataset:

- env resets: eval episodes use ``rollout``'s own scheme (``seed * 10_000 + offset + e``);
  training and collection episodes use :func:`stream_seed`, far above that range.
- actions: uniform actions come from a numpy Generator, sampled SAC actions from a torch
  Generator, both seeded by (seed, stream).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from gymnasium.vector import SyncVectorEnv
from torch import Tensor

from cql_runner.cql.losses import squashed_gaussian_sample
from cql_runner.networks import Actor
from cql_runner.rollout import Policy, rollout

# Streams: one per use, so e.g. the medium data never shares env seeds with the expert data.
STREAMS = {"random": 1, "medium": 2, "expert": 3, "ref": 7, "train": 8, "warmup": 9, "online": 10}
# rollout() seed offsets of the evaluation episodes (SAC snapshots) and reference returns.
EVAL_OFFSET = 100
REF_OFFSET = 2_000


def stream_seed(seed: int, stream: str, index: int = 0) -> int:
    """The rollout base seed of batch ``index`` of ``stream`` under ``seed``.

    ``rollout`` resets env e of a batch with ``base * 10_000 + e``, which for these bases is
    at least 10**11: above every eval seed (``seed * 10_000 + offset + e``) for seeds below
    10**7, and distinct across (seed, stream, index) for index < 10**6.
    """
    return 10**7 * (1 + int(seed)) + 10**6 * STREAMS[stream] + int(index)


def episode_seed(seed: int, stream: str, n: int) -> int:
    """Reset seed of episode ``n`` of a stream stepped one env at a time (online training)."""
    return stream_seed(seed, stream) * 10_000 + int(n)


def torch_generator(seed: int, stream: str) -> torch.Generator:
    return torch.Generator().manual_seed(stream_seed(seed, stream))


def numpy_generator(seed: int, stream: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), STREAMS[stream]])


def uniform_policy(act_dim: int, rng: np.random.Generator) -> Policy:
    """Uniform actions in [-1, 1] (the D4RL ``random`` policy)."""

    def policy(obs: np.ndarray) -> np.ndarray:
        return rng.uniform(-1.0, 1.0, (*obs.shape[:-1], act_dim)).astype(np.float32)

    return policy


def build_actor(obs_dim: int, act_dim: int, hidden: list[int], state: Mapping[str, Tensor]) -> Actor:
    """A single (K = 1) actor with the weights of a saved snapshot, in eval mode."""
    actor = Actor(1, obs_dim, act_dim, list(hidden))
    actor.load_state_dict(dict(state))
    return actor.eval().requires_grad_(False)


def actor_policy(actor: Actor, deterministic: bool, generator: torch.Generator | None = None) -> Policy:
    """tanh(mean) if ``deterministic``, else a draw from the squashed Gaussian using ``generator``.

    Observations go in raw: the online SAC agent never normalises them.
    """
    if not deterministic and generator is None:
        raise ValueError("a stochastic policy needs its own torch.Generator")

    @torch.no_grad()
    def policy(obs: np.ndarray) -> np.ndarray:
        mean, log_std = actor(torch.as_tensor(obs, dtype=torch.float32))
        if deterministic:
            return torch.tanh(mean).numpy()
        eps = torch.randn(mean.shape, generator=generator)
        return squashed_gaussian_sample(mean, log_std, eps)[0].numpy()

    return policy


def mean_return(vec: SyncVectorEnv, policy: Policy, seed: int, seed_offset: int) -> float:
    """Mean undiscounted return over one episode in each env of ``vec`` (seeded resets)."""
    result = rollout(vec, policy, [seed], vec.num_envs, seed_offset=seed_offset)
    return float(result.returns.mean())
