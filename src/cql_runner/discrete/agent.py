"""The discrete CQL agent: Q-networks (Double DQN or QR-DQN heads), targets, optimizer, one step.

K agents (seeds) live side by side as the K members of one ensemble network (an MLP, or the
Nature CNN with the seeds as convolution groups); with K = 1 this is an ordinary single-seed
agent. Every tensor of the agent's state has the seed as its leading
dimension (the observation statistics excepted, which all seeds share), so one seed's share
of a K-seed checkpoint is a slice, in exactly the format a single-seed run writes. The
update draws no random numbers, so seed k of a K-seed run equals a single run with seed k.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from cql_runner.config import CQLConfig, DiscreteConfig, NetworkConfig
from cql_runner.cql.agent import make_optimizer
from cql_runner.cql.diagnostics import cql_diagnosis
from cql_runner.cql.losses import cql_penalty, project_log_alpha_prime
from cql_runner.networks import EnsembleMLP
from cql_runner.seeds import StackedLayout

from . import losses
from .networks import EnsembleNatureCNN, make_q_network
from .sampler import DiscreteBatch


class DiscreteCQLAgent(nn.Module):
    # Buffers registered in __init__ (nn.Module.__getattr__ alone would type them Tensor | Module).
    obs_mean: Tensor
    obs_std: Tensor

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        seeds: Sequence[int],
        network: NetworkConfig,
        cql: CQLConfig,
        discrete: DiscreteConfig,
        device: torch.device | str = "cpu",
        obs_mean: np.ndarray | None = None,
        obs_std: np.ndarray | None = None,
        obs_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.seeds = [int(s) for s in seeds]
        self.n_agents = len(self.seeds)
        self.obs_dim, self.n_actions = obs_dim, n_actions
        self.cql, self.discrete = cql, discrete
        self.device = torch.device(device)
        self.quantile = discrete.backbone == "qr_dqn"
        # cql.bc_steps > 0 (preset cql=bc): the whole run is behaviour cloning of the dataset actions,
        # with the network's outputs as policy logits (validate_discrete refuses a BC warm start).
        self.behaviour_cloning = cql.bc_steps > 0
        self.n_quantiles = int(discrete.n_quantiles) if self.quantile else 1
        # Image observations arrive as (C, H, W) uint8 frame stacks, vectors as (obs_dim,).
        self.obs_shape = tuple(int(d) for d in (obs_shape or (obs_dim,)))
        self.images = discrete.encoder == "nature_cnn"
        self.q = make_q_network(
            self.n_agents,
            self.obs_shape,
            n_actions * self.n_quantiles,
            discrete.encoder,
            list(network.hidden),
            network.layer_norm,
        )
        for k, seed in enumerate(self.seeds):
            g = torch.Generator().manual_seed(seed)
            if self.images:
                assert isinstance(self.q, EnsembleNatureCNN)  # encoder nature_cnn builds the CNN
                self.q.init_member(k, g)
            else:
                assert isinstance(self.q, EnsembleMLP)
                self.q.init_member(k, g, network.orthogonal_init)
        self.target_q = copy.deepcopy(self.q).requires_grad_(False)
        self.log_alpha_prime = nn.Parameter(torch.full((self.n_agents,), math.log(cql.alpha_prime_init)))
        # Without statistics the standardisation is the identity: skip its ops (checkpoints keep the buffers).
        self.standardize = obs_mean is not None or obs_std is not None
        mean = np.zeros(obs_dim, np.float32) if obs_mean is None else obs_mean
        std = np.ones(obs_dim, np.float32) if obs_std is None else obs_std
        self.register_buffer("obs_mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("obs_std", torch.as_tensor(std, dtype=torch.float32))
        self.to(self.device)
        # One fused Adam kernel where torch has it (the continuous agent's optimizer): at batch 32 the
        # per-parameter foreach Adam was 40% of a CartPole-sized step (scripts/bench_discrete.py).
        self.optimizer = make_optimizer(
            [
                {"params": list(self.q.parameters()), "lr": cql.critic_lr},
                {"params": [self.log_alpha_prime], "lr": cql.alpha_prime_lr},
            ]
        )
        # No update draws random numbers; the list exists for the trainer's step protocol.
        self.generators: list[torch.Generator] = []
        self.num_updates = 0

    # ----- the networks ---------------------------------------------------------------
    def normalize(self, obs: Tensor) -> Tensor:
        # Frames stay uint8 until the CNN scales them; vectors are standardised when the run has statistics.
        return obs if self.images or not self.standardize else (obs - self.obs_mean) / self.obs_std

    def _observations(self, obs: np.ndarray) -> Tensor:
        """Raw (K, M, ...) observations from an env or the data → the network's input."""
        if self.images:
            x = torch.as_tensor(np.asarray(obs, dtype=np.uint8), device=self.device)
            return x.reshape(*x.shape[:2], *self.obs_shape)
        return self.normalize(torch.as_tensor(obs, dtype=torch.float32, device=self.device))

    def quantiles(self, obs: Tensor, target: bool = False) -> Tensor:
        """(K, B, obs_dim) normalised vectors or (K, B, C, H, W) uint8 frames → (K, B, A, N);
        N = 1 for Double DQN."""
        net = self.target_q if target else self.q
        out = net(obs)
        return out.reshape(*out.shape[:-1], self.n_actions, self.n_quantiles)

    def q_values(self, obs: Tensor, target: bool = False) -> Tensor:
        """Q(s, ·) = mean over quantiles: (K, B, A)."""
        return self.quantiles(obs, target).mean(-1)

    # ----- the losses -----------------------------------------------------------------
    def compute_losses(self, batch: DiscreteBatch) -> tuple[Tensor, dict[str, Tensor]]:
        if self.behaviour_cloning:
            return self._bc_losses(batch)
        c, d = self.cql, self.discrete
        obs, next_obs = self.normalize(batch.obs), self.normalize(batch.next_obs)
        theta = self.quantiles(obs)  # (K, B, A, N)
        q = theta.mean(-1) if self.quantile else theta.squeeze(-1)
        with torch.no_grad():
            next_online = self.quantiles(next_obs)
            next_target = self.quantiles(next_obs, target=True)
        if self.quantile:
            index = batch.actions[..., None, None].expand(*batch.actions.shape, 1, self.n_quantiles)
            theta_data = theta.gather(-2, index).squeeze(-2)  # (K, B, N)
            target = losses.qr_double_dqn_target(
                rewards=batch.rewards,
                discounts=batch.discounts,
                next_quantiles_online=next_online,
                next_quantiles_target=next_target,
            )
            td = losses.quantile_huber_loss(quantiles=theta_data, target=target)
            target_mean = target.mean(-1)
        else:
            q_data = q.gather(-1, batch.actions.unsqueeze(-1)).squeeze(-1)
            target_mean = losses.double_dqn_target(
                rewards=batch.rewards,
                discounts=batch.discounts,
                next_q_online=next_online.squeeze(-1),
                next_q_target=next_target.squeeze(-1),
            )
            # validate() checks that discrete.td_loss is mse or huber.
            td = losses.td_loss(q_data=q_data, target=target_mean, kind=cast(losses.TDKind, d.td_loss))
        gap = losses.conservative_gap(q_values=q, actions=batch.actions, temperature=c.temperature)
        # The continuous agent's penalty, on a gap of one critic: (K,) → (K, 1).
        penalty = cql_penalty(
            gap=gap.gap.unsqueeze(-1),
            alpha=c.alpha,
            lagrange=c.lagrange,
            lagrange_form=c.lagrange_form,
            tau=c.tau,
            log_alpha_prime=self.log_alpha_prime,
        )
        critic = td + penalty.penalty.squeeze(-1)
        # Without Lagrange the α′ loss is a constant 0: leave it out of the graph.
        total = (critic + penalty.alpha_prime_loss).sum() if c.lagrange else critic.sum()
        metrics = {
            "loss/critic": critic,
            "loss/td": td,
            "loss/cql": penalty.penalty.squeeze(-1),
            "loss/alpha_prime": penalty.alpha_prime_loss,
            "alpha_prime": penalty.alpha_prime,
            "cql/gap": gap.gap,
            "cql/ood_logsumexp": gap.logsumexp,
            "q/data": gap.q_data,
            "q/target": target_mean.mean(-1),
        }
        return total, {name: value.detach() for name, value in metrics.items()}

    def _bc_losses(self, batch: DiscreteBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """Cross-entropy of the dataset actions under softmax(outputs); no TD loss, no target network."""
        bc = losses.bc_cross_entropy(logits=self.q_values(self.normalize(batch.obs)), actions=batch.actions)
        metrics = {"loss/bc": bc.loss, "bc/accuracy": bc.accuracy}
        return bc.loss.sum(), {name: value.detach() for name, value in metrics.items()}

    # ----- one gradient step ----------------------------------------------------------
    def update(self, batch: DiscreteBatch) -> dict[str, Tensor]:
        """One step on ``batch``; returns per-agent metrics (K,) left on the device."""
        total, metrics = self.compute_losses(batch)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        if self.cql.lagrange:  # α′ only moves under Lagrange
            project_log_alpha_prime(self.log_alpha_prime, alpha_prime_max=self.cql.alpha_prime_max)
        self.num_updates += 1
        self._update_target()
        return metrics

    @torch.no_grad()
    def _update_target(self) -> None:
        online: list[Tensor] = list(self.q.parameters())
        target: list[Tensor] = list(self.target_q.parameters())
        if self.discrete.target_update == "polyak":
            torch._foreach_lerp_(target, online, self.cql.target_update_rate)
        elif self.num_updates % self.discrete.target_update_every == 0:
            torch._foreach_copy_(target, online)

    # ----- acting ---------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Greedy actions: raw obs (K, E, ...) → (K, E) int64."""
        return self.q_values(self._observations(obs)).argmax(-1).cpu().numpy()

    @torch.no_grad()
    def q_value(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Q(s, a) for raw obs (K, M, obs_dim) and action indices (K, M) → (K, M)."""
        x = self._observations(obs)
        a = torch.as_tensor(actions, dtype=torch.int64, device=self.device).reshape(x.shape[:2])
        return self.q_values(x).gather(-1, a.unsqueeze(-1)).squeeze(-1).cpu().numpy()

    # ----- checkpointing --------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "modules": self.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "num_updates": self.num_updates,
            "seeds": self.seeds,
        }

    def stacked_layout(self) -> StackedLayout:
        """Every tensor has the seed as its leading dim (one member each), the observation
        statistics excepted (shared): see cql_runner.seeds."""
        return StackedLayout(
            n_agents=self.n_agents,
            modules={name: 0 if name.startswith("obs_") else 1 for name in self.state_dict()},
            optimizer=[1] * (len(list(self.q.parameters())) + 1),
        )  # the Q-network's, then log α′

    def diagnose(self, record: Mapping[str, float]) -> str | None:
        """A one-line warning about the training dynamics in one seed's logged means, else None."""
        return cql_diagnosis(self.cql, record)

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        if list(state["seeds"]) != self.seeds:
            raise ValueError(f"checkpoint was written for seeds {state['seeds']}, not {self.seeds}")
        self.load_state_dict(state["modules"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.num_updates = int(state["num_updates"])
