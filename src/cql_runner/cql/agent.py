"""The CQL agent: networks, target critics, optimizers and one gradient step.

K agents (seeds) live side by side in stacked parameters; with K = 1 this is an ordinary
single-seed agent. Every random draw comes from the agent's own per-seed generators, so
agent k of a K-agent run sees exactly the numbers a single run with seed k would see.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any, NamedTuple

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from cql_runner.config import CQLConfig, NetworkConfig
from cql_runner.cql import losses, terms
from cql_runner.cql.calibration import calibration_bound
from cql_runner.cql.diagnostics import cql_diagnosis
from cql_runner.cql.masked_step import masked_adam_step
from cql_runner.data.types import Batch
from cql_runner.networks import Actor, Critic
from cql_runner.seeds import StackedLayout


class Noise(NamedTuple):
    """Standard-normal draws for π(s) and π(s′), and uniform actions: each (K, N, B, A)."""

    policy: Tensor
    next_policy: Tensor
    uniform: Tensor


class PolicySample(NamedTuple):
    """N reparameterised draws of π(·|s) per state and the Gaussian they came from."""

    actions: Tensor  # (K, N, B, A)
    log_prob: Tensor  # (K, N, B)
    mean: Tensor  # (K, B, A): pre-tanh mean
    log_std: Tensor  # (K, B, A)


# Offsets keep the update-noise stream apart from the data-sampling stream of the same seed.
NOISE_SEED_OFFSET = 7_919


class CQLAgent(nn.Module):
    """K CQL agents in stacked parameters. ``network``/``cql`` are the structured configs: the
    dataclasses themselves, or the DictConfigs Hydra composed from them (what ``cql-train`` passes)."""

    # Buffers registered in __init__ (nn.Module.__getattr__ alone would type them Tensor | Module).
    obs_mean: Tensor
    obs_std: Tensor
    update_count: Tensor
    sat_out_count: Tensor

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        seeds: Sequence[int],
        network: NetworkConfig | DictConfig,
        cql: CQLConfig | DictConfig,
        device: torch.device | str = "cpu",
        obs_mean: np.ndarray | None = None,
        obs_std: np.ndarray | None = None,
        bf16: bool = False,
        compile: bool = False,
        capturable: bool = False,
    ) -> None:
        super().__init__()
        self.seeds = [int(s) for s in seeds]
        self.n_agents = len(self.seeds)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.cql = cql
        self.device = torch.device(device)
        self.bf16 = bf16
        self.capturable = capturable
        self.target_entropy = float(cql.target_entropy) if cql.target_entropy is not None else -float(act_dim)
        # With no conservative weight the CQL proposals cannot change any loss: skip them
        # (plain offline or online SAC).
        self.conservative = cql.alpha > 0
        # The Cal-QL bound on the policy proposals. A fine-tuning phase may turn it off
        # (online.calibrate_online) through set_calibration.
        self.calibrate = bool(cql.calibration)

        actor_hidden = list(network.actor_hidden or network.hidden)
        critic_hidden = list(network.critic_hidden or network.hidden)
        self.actor = Actor(
            self.n_agents, obs_dim, act_dim, actor_hidden, network.layer_norm, network.log_std_min, network.log_std_max
        )
        self.critic = Critic(self.n_agents, network.n_critics, obs_dim, act_dim, critic_hidden, network.layer_norm)
        for k, seed in enumerate(self.seeds):
            g = torch.Generator().manual_seed(seed)
            self.actor.net.init_member(k, g, network.orthogonal_init)
            for i in range(network.n_critics):
                self.critic.net.init_member(k * network.n_critics + i, g, network.orthogonal_init)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)

        k = self.n_agents
        self.log_alpha = nn.Parameter(torch.full((k,), math.log(cql.entropy_alpha_init)))
        self.log_alpha_prime = nn.Parameter(torch.full((k,), math.log(cql.alpha_prime_init)))
        mean = np.zeros(obs_dim, np.float32) if obs_mean is None else obs_mean
        std = np.ones(obs_dim, np.float32) if obs_std is None else obs_std
        self.register_buffer("obs_mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("obs_std", torch.as_tensor(std, dtype=torch.float32))
        # Updates taken, on the device: the BC warm-start switch reads it inside the step, so an
        # eager step and a replayed CUDA graph decide it the same way. Checkpointed as num_updates.
        self.register_buffer("update_count", torch.zeros((), dtype=torch.int64), persistent=False)
        # Per seed, the updates it sat out while other seeds updated (online, where each seed starts
        # updating when its own first episode ends): seed k has taken update_count − sat_out[k]
        # updates. Kept on the host for the optimizer step and on the device for the BC switch.
        self.sat_out = [0] * self.n_agents
        self.register_buffer("sat_out_count", torch.zeros(self.n_agents, dtype=torch.int64), persistent=False)
        self.to(self.device)

        self.generators = [torch.Generator(self.device).manual_seed(seed + NOISE_SEED_OFFSET) for seed in self.seeds]
        self.optimizer = make_optimizer(
            [
                {"params": list(self.actor.parameters()), "lr": cql.policy_lr},
                {"params": list(self.critic.parameters()), "lr": cql.critic_lr},
                {"params": [self.log_alpha], "lr": cql.alpha_lr},
                {"params": [self.log_alpha_prime], "lr": cql.alpha_prime_lr},
            ],
            capturable,
        )
        # Rows per seed of each optimizer parameter, for steps that only some seeds take.
        self._optimizer_members = self.stacked_layout().optimizer
        # The loss graph is compiled; the optimizer step and Polyak update stay eager.
        self._losses = torch.compile(self.compute_losses, dynamic=False) if compile else self.compute_losses

    # ----- sampling -------------------------------------------------------------------
    def draw_noise(self, batch_size: int, active: Sequence[bool] | None = None) -> Noise:
        """Per-seed draws; a seed not ``active`` gets zeros and its generator does not advance."""
        shape = (self.cql.n_actions, batch_size, self.act_dim)
        per_agent = []
        for k, g in enumerate(self.generators):
            if active is not None and not active[k]:
                zeros = torch.zeros(shape, device=self.device)
                per_agent.append((zeros, zeros, zeros))
                continue
            policy = torch.randn(shape, generator=g, device=self.device)
            next_policy = torch.randn(shape, generator=g, device=self.device)
            uniform = torch.rand(shape, generator=g, device=self.device) * 2.0 - 1.0
            per_agent.append((policy, next_policy, uniform))
        return Noise(*(torch.stack(parts) for parts in zip(*per_agent)))

    # ----- the losses of one step -----------------------------------------------------
    @property
    def num_updates(self) -> int:
        """Updates taken so far (reads the device-side counter: a host sync)."""
        return int(self.update_count.item())

    def compute_losses(self, batch: Batch, noise: Noise) -> tuple[Tensor, dict[str, Tensor]]:
        """All losses from the current parameters; returns (sum to minimise, metrics (K,))."""
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()
        entropy_alpha = self.log_alpha.exp().detach()
        with autocast:
            policy = self._sample_policy(batch.obs, noise.policy)
            with torch.no_grad():
                next_policy = self._sample_policy(batch.next_obs, noise.next_policy)
                target = self._td_target(batch, next_policy, entropy_alpha)
            critic = self._critic_terms(batch, noise, policy, next_policy, target)
            actor = self._actor_terms(batch, policy, entropy_alpha)
        return terms.total_loss(critic, actor), terms.step_metrics(critic, actor)

    def _sample_policy(self, obs: Tensor, eps: Tensor) -> PolicySample:
        mean, log_std = self.actor(obs)
        actions, log_prob = losses.squashed_gaussian_sample(
            mean.unsqueeze(1).float(), log_std.unsqueeze(1).float(), eps
        )
        return PolicySample(actions=actions, log_prob=log_prob, mean=mean.float(), log_std=log_std.float())

    def _td_target(self, batch: Batch, next_policy: PolicySample, entropy_alpha: Tensor) -> Tensor:
        """y from the target critics at a′: the first sample of π(·|s′), the best of N (max
        backup), or the mean action tanh(μ(s′)) (d3rlpy's deterministic backup)."""
        c, (k, b) = self.cql, batch.rewards.shape
        if c.target_action == "mean":
            actions, log_prob = torch.tanh(next_policy.mean).unsqueeze(1), None
        else:
            samples = c.n_actions if c.max_backup else 1
            actions, log_prob = next_policy.actions[:, :samples], next_policy.log_prob[:, :samples]
        samples = actions.shape[1]
        next_q = self.target_critic(_repeat(batch.next_obs, samples), actions.reshape(k, -1, self.act_dim))
        return losses.td_target(
            reward=batch.rewards,
            terminal=batch.terminals,
            next_q=next_q.float().reshape(k, -1, samples, b),
            next_log_prob=log_prob,
            entropy_alpha=entropy_alpha,
            discount=c.discount,
            deterministic_backup=c.deterministic_backup,
            max_backup=c.max_backup,
        )

    def _critic_terms(
        self, batch: Batch, noise: Noise, policy: PolicySample, next_policy: PolicySample, target: Tensor
    ) -> terms.CriticTerms:
        c, (k, b) = self.cql, batch.rewards.shape
        if self.conservative:
            n = c.n_actions
            # One critic call at s for the dataset action and the N proposals of each of Unif,
            # π(·|s) and π(·|s′), laid out (K, n, 1 + 3N, B) and split by name.
            actions = torch.cat(
                [batch.actions.unsqueeze(1), noise.uniform, policy.actions.detach(), next_policy.actions], dim=1
            )
            q_all = self.critic(_repeat(batch.obs, 1 + 3 * n), actions.reshape(k, -1, self.act_dim))
            q_data, q_uniform, q_policy, q_next_policy = (
                q_all.float().reshape(k, -1, 1 + 3 * n, b).split([1, n, n, n], dim=2)
            )
            q_data = q_data.squeeze(2)
            lifted = None
            if self.calibrate:
                # Cal-QL: the π(s) and π(s′) proposals, never the uniform ones, bounded below by
                # the batch's returns-to-go.
                if batch.returns_to_go is None:
                    raise ValueError("cql.calibration needs batches with returns_to_go")
                calibrated = calibration_bound(
                    q_policy=q_policy, q_next_policy=q_next_policy, returns_to_go=batch.returns_to_go
                )
                q_policy, q_next_policy, lifted = calibrated
            gap = losses.conservative_gap(
                q_uniform=q_uniform,
                q_policy=q_policy,
                q_next_policy=q_next_policy,
                q_data=q_data,
                log_prob_policy=policy.log_prob,
                log_prob_next_policy=next_policy.log_prob,
                act_dim=self.act_dim,
                temperature=c.temperature,
                importance_sampling=c.importance_sampling,
                clip_min=c.clip_diff_min,
                clip_max=c.clip_diff_max,
            )
            cql = losses.cql_penalty(
                gap=gap.gap,
                alpha=c.alpha,
                lagrange=c.lagrange,
                lagrange_form=c.lagrange_form,
                tau=c.tau,
                log_alpha_prime=self.log_alpha_prime,
            )
        else:
            q_data = self.critic(batch.obs, batch.actions).float()
            gap, cql = losses.conservative_term_off(n_agents=k, n_critics=q_data.shape[1], like=q_data)
            lifted = None
        return terms.CriticTerms(
            target=target,
            q_data=q_data,
            td=losses.td_loss(q_data=q_data, target=target),
            gap=gap,
            cql=cql,
            calibration_lifted=lifted,
        )

    def _actor_terms(self, batch: Batch, policy: PolicySample, entropy_alpha: Tensor) -> terms.ActorTerms:
        log_prob = policy.log_prob[:, 0]
        # The actor sees the critics through detached weights: no gradient reaches them.
        frozen = [p.detach() for p in self.critic.net.param_list()]
        q_policy_min = self.critic(batch.obs, policy.actions[:, 0], params=frozen).float().min(dim=1).values
        objective = q_policy_min
        if self.cql.bc_steps > 0:
            # The behaviour-cloning warm start, switched by the device-side update count.
            bc_log_prob = losses.squashed_gaussian_log_prob(policy.mean, policy.log_std, batch.actions)
            seed_updates = (self.update_count - self.sat_out_count).unsqueeze(-1)  # (K, 1)
            objective = torch.where(seed_updates < self.cql.bc_steps, bc_log_prob, q_policy_min)
        loss = losses.actor_loss(entropy_alpha=entropy_alpha, log_prob=log_prob, objective=objective)
        alpha_loss = (
            losses.entropy_alpha_loss(
                log_alpha=self.log_alpha,
                log_prob=log_prob,
                target_entropy=self.target_entropy,
                form=self.cql.entropy_alpha_loss,
            )
            if self.cql.auto_entropy
            else torch.zeros_like(loss)
        )
        return terms.ActorTerms(
            loss=loss, alpha_loss=alpha_loss, entropy_alpha=entropy_alpha, log_prob=log_prob, q_policy_min=q_policy_min
        )

    def set_calibration(self, on: bool) -> None:
        """Turn the Cal-QL bound on or off from the next update on (cql.calibration must be set)."""
        self.calibrate = bool(on) and bool(self.cql.calibration)

    # ----- one gradient step ----------------------------------------------------------
    def update(self, batch: Batch, active: Sequence[bool] | None = None) -> dict[str, Tensor]:
        """One CQL step on ``batch``; returns per-agent metrics (K,) left on the device.

        ``active``: which seeds take this step (default all). A seed left out keeps its
        parameters, optimizer state and generators exactly as they were; its rows of ``batch``
        and of the returned metrics are ignored.
        """
        active = [True] * self.n_agents if active is None else [bool(a) for a in active]
        if len(active) != self.n_agents:
            raise ValueError(f"active names {len(active)} seeds, the agent has {self.n_agents}")
        # The plain fused step while every seed has taken every update (always, offline).
        masked = not all(active) or any(self.sat_out)
        noise = self.draw_noise(batch.obs.shape[1], active if masked else None)
        total, metrics = self._losses(batch, noise)
        # Every loss is built before any step, so no optimizer modifies a tensor another
        # loss still needs (the original code's failure on newer PyTorch).
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if masked:
            masked_adam_step(self.optimizer, members=self._optimizer_members, active=active, sat_out=self.sat_out)
        else:
            self.optimizer.step()
        losses.project_log_alpha_prime(self.log_alpha_prime, alpha_prime_max=self.cql.alpha_prime_max)
        with torch.no_grad():
            targets, sources = self.target_critic.net.param_list(), self.critic.net.param_list()
            if masked:
                n = self.critic.n_critics
                seeds = [k for k, on in enumerate(active) if on]
                targets = [t[k * n : (k + 1) * n] for t in targets for k in seeds]
                sources = [s[k * n : (k + 1) * n] for s in sources for k in seeds]
            torch._foreach_lerp_(targets, sources, self.cql.target_update_rate)
            self.update_count += 1
        if masked:
            self._set_sat_out([n + (not on) for n, on in zip(self.sat_out, active)])
        return metrics

    def _set_sat_out(self, counts: Sequence[int]) -> None:
        self.sat_out = [int(c) for c in counts]
        self.sat_out_count.copy_(torch.as_tensor(self.sat_out, dtype=torch.int64))

    # ----- diagnostics ----------------------------------------------------------------
    def diagnose(self, record: Mapping[str, float]) -> str | None:
        """A one-line warning about the training dynamics in one seed's logged means, else None."""
        return cql_diagnosis(self.cql, record)

    # ----- acting ---------------------------------------------------------------------
    def normalize(self, obs: Tensor) -> Tensor:
        return (obs - self.obs_mean) / self.obs_std

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic actions tanh(mean) in [-1, 1]: raw obs (K, E, obs_dim) → (K, E, A)."""
        x = self.normalize(torch.as_tensor(obs, dtype=torch.float32, device=self.device))
        mean, _ = self.actor(x)
        return torch.tanh(mean).float().cpu().numpy()

    @torch.no_grad()
    def q_value(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """min_i Q_i(s, a) for raw obs (K, M, obs_dim) and unit actions (K, M, A) → (K, M)."""
        x = self.normalize(torch.as_tensor(obs, dtype=torch.float32, device=self.device))
        a = torch.as_tensor(actions, dtype=torch.float32, device=self.device)
        return self.critic(x, a).min(dim=1).values.float().cpu().numpy()

    # ----- checkpointing --------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        state = {
            "modules": self.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generators": [g.get_state() for g in self.generators],
            "num_updates": self.num_updates,
            "seeds": self.seeds,
        }
        if any(self.sat_out):  # only a stacked state of seeds with different update counts
            state["sat_out"] = list(self.sat_out)
        return state

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        if list(state["seeds"]) != self.seeds:
            raise ValueError(f"checkpoint was written for seeds {state['seeds']}, not {self.seeds}")
        self.load_state_dict(state["modules"])
        self.optimizer.load_state_dict(_split_temperature_group(state["optimizer"]))
        # The saved groups carry the writer's capturable flag; this run's device decides it.
        for group in self.optimizer.param_groups:
            group["capturable"] = self.capturable
        for g, s in zip(self.generators, state["generators"]):
            g.set_state(s)
        self.update_count.fill_(int(state["num_updates"]))
        self._set_sat_out(state.get("sat_out", [0] * self.n_agents))

    def stacked_layout(self) -> StackedLayout:
        """How many ensemble members of each tensor belong to one seed (see cql_runner.seeds)."""

        def members(name: str) -> int:
            if name.startswith(("critic.", "target_critic.")):
                return self.critic.n_critics
            if name.startswith("actor.") or name in ("log_alpha", "log_alpha_prime"):
                return 1
            return 0  # shared by all seeds (observation statistics)

        n_actor, n_critic = len(list(self.actor.parameters())), len(list(self.critic.parameters()))
        return StackedLayout(
            n_agents=self.n_agents,
            modules={name: members(name) for name in self.state_dict()},
            optimizer=[1] * n_actor + [self.critic.n_critics] * n_critic + [1, 1],
        )


def _repeat(obs: Tensor, times: int) -> Tensor:
    """(K, B, d) → (K, times·B, d), sample-major, matching actions laid out (K, times, B, ·)."""
    k, b, d = obs.shape
    return obs.unsqueeze(1).expand(k, times, b, d).reshape(k, times * b, d)


def _split_temperature_group(opt_state: dict[str, Any]) -> dict[str, Any]:
    """Optimizer state written when α and α′ shared one group (before ``alpha_prime_lr``), as two."""
    groups = opt_state["param_groups"]
    if len(groups) != 3:
        return opt_state
    temps = groups[2]
    log_alpha, log_alpha_prime = temps["params"]
    return {
        **opt_state,
        "param_groups": [*groups[:2], {**temps, "params": [log_alpha]}, {**temps, "params": [log_alpha_prime]}],
    }


def make_optimizer(groups: list[dict[str, Any]], capturable: bool = False) -> torch.optim.Optimizer:
    """Adam over all parameter groups in one fused kernel where this torch supports it.

    ``capturable`` keeps the step counters on the device so a CUDA graph can replay the step.
    """
    try:
        return torch.optim.Adam(groups, fused=True, capturable=capturable)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(groups, foreach=True, capturable=capturable)
