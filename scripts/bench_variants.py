#!/usr/bin/env python
"""Scratch variants of the CQL step, to measure which speed ideas pay.

Nothing here changes cql_runner: every idea is a subclass of CQLAgent (a copy of
``compute_losses`` with the idea in it) or a per-instance override of a network's
``forward``. ``--check`` verifies that each variant computes the same loss and gradients
as the real agent; the speed study times every variant side by side with the real
agent in interleaved rounds and reports ratios to it.

Ideas (see docs/PERFORMANCE.md for the numbers; the winner, all_best, is what cql_runner's
networks now run on CPU, so "batched" below is the old path and all_best matches ours):
  a  batched           one baddbmm per layer over all members (the GPU path)
     separate_critics  each critic its own addmm chain (nn.Linear style) instead of one baddbmm
  b  actor_stacked     one actor forward over [s; s′] (with grad, the s′ half detached)
     actor_repeat      d3rlpy-style: the actor run on N·B repeated states per proposal
  c  compile           torch.compile(agent.compute_losses)
     compile_autotune  the same with inductor's max_autotune (benchmarks ATen against its C++ GEMM templates)
  d  malloc            MALLOC_MMAP_THRESHOLD_/TRIM_THRESHOLD_/TOP_PAD_ in a fresh subprocess
  e  threads1          torch.set_num_threads(1) around the step (vs torch's default, 2 here)
  f  relu_inplace      F.relu_ in the MLPs: one activation allocation less per layer
     fast_out_layer    the H→1 critic head with a custom backward: dW as gᵀx, dX as g·wᵀ
                       (bmm/baddbmm with a one-column operand miss torch's GEMV paths on CPU)
     out_layer_2d      only the H→1 head per critic as a 2-D addmm (the minimal fix)
     fused_best        relu_inplace + fast_out_layer
     all_best          separate_critics + relu_inplace + fast_out_layer

    python scripts/bench_variants.py --check
    python scripts/bench_variants.py --study --json variants.json   # all ideas, a few minutes
    python scripts/bench.py --variants                              # the in-process rows in bench's table
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", "/tmp/inductor-cache")

import torch
import torch.nn.functional as F
from torch import Tensor

from cql_runner.cql import losses
from cql_runner.cql.agent import Batch, CQLAgent, Noise, _repeat
from cql_runner.networks import EnsembleMLP, OneColumnLinear

HERE = Path(__file__).resolve().parent
# glibc caps M_MMAP_THRESHOLD at 32 MiB on 64-bit; one (2, 7936, 256) fp32 activation is 15.5 MiB.
MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(32 * 1024 * 1024),
    "MALLOC_TRIM_THRESHOLD_": str(1024 * 1024 * 1024),
    "MALLOC_TOP_PAD_": str(256 * 1024 * 1024),
}


# ----- network-level variants -------------------------------------------------------------
def mlp_forward(net: EnsembleMLP, x: Tensor, params: Sequence[Tensor] | None = None, *,
                separate: bool = False, relu_inplace: bool = False, fast_out: bool = False,
                out_2d: bool = False) -> Tensor:
    """EnsembleMLP.forward with the network-level ideas switched on (no layer norm)."""
    if net.layer_norm:
        raise NotImplementedError("the variants cover the standard workload: layer_norm=False")
    p = net.param_list() if params is None else list(params)
    n = net.n_layers
    weights, biases = p[:n], p[n : 2 * n]
    relu = F.relu_ if relu_inplace else F.relu
    if separate:
        outs = []
        for j in range(net.members):
            h = x[j]
            for i in range(n):
                if fast_out and i == n - 1 and weights[i].shape[-1] == 1:
                    h = OneColumnLinear.apply(h, weights[i][j], biases[i][j])
                    break
                # F.linear's own path: addmm(bias, h, W) with W (in, out) as stored.
                h = torch.addmm(biases[i][j], h, weights[i][j])
                if i < n - 1:
                    h = relu(h)
            outs.append(h)
        return torch.stack(outs)
    for i in range(n):
        if fast_out and i == n - 1 and weights[i].shape[-1] == 1:
            return OneColumnLinear.apply(x, weights[i], biases[i])
        if out_2d and i == n - 1:
            # The head per member as a plain 2-D addmm: torch takes its GEMV paths for a
            # one-column weight there, while bmm/baddbmm do not.
            return torch.stack([torch.addmm(biases[i][j], x[j], weights[i][j]) for j in range(net.members)])
        x = torch.baddbmm(biases[i], x, weights[i])
        if i < n - 1:
            x = relu(x)
    return x


def patch_networks(agent: CQLAgent, **opts: bool) -> CQLAgent:
    """Route the actor, critic and target critic through ``mlp_forward(**opts)``."""
    for module in (agent.actor.net, agent.critic.net, agent.target_critic.net):
        module.forward = types.MethodType(lambda self, x, params=None: mlp_forward(self, x, params, **opts), module)
    return agent


# ----- loss-level variants (a copy of CQLAgent.compute_losses) ------------------------------
class VariantAgent(CQLAgent):
    """CQLAgent with ``compute_losses`` copied, and the actor calls made switchable.

    actor_mode: "current" (one forward per state, N draws from it), "stacked" (one forward
    over [s; s′] with grad, the s′ half detached), "repeat" (d3rlpy-style: the actor runs
    on N repeated copies of each state).
    """

    actor_mode = "current"

    def _actor_pair(self, obs: Tensor, next_obs: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(mean, log_std) at s with grad and at s′ without, each (K, B, A) — or (K, N·B, A)
        for "repeat" (sample-major)."""
        n_act = self.cql.n_actions
        if self.actor_mode == "stacked":
            mean_all, log_std_all = self.actor(torch.cat([obs, next_obs], dim=1))
            b = obs.shape[1]
            return (mean_all[:, :b], log_std_all[:, :b], mean_all[:, b:].detach(), log_std_all[:, b:].detach())
        if self.actor_mode == "repeat":
            mean, log_std = self.actor(_repeat(obs, n_act))
            with torch.no_grad():
                next_mean, next_log_std = self.actor(_repeat(next_obs, n_act))
            return mean, log_std, next_mean, next_log_std
        mean, log_std = self.actor(obs)
        with torch.no_grad():
            next_mean, next_log_std = self.actor(next_obs)
        return mean, log_std, next_mean, next_log_std

    def _shape_for_noise(self, t: Tensor, b: int) -> Tensor:
        """(K, B, A) → (K, 1, B, A) to broadcast over N draws; (K, N·B, A) → (K, N, B, A)."""
        if self.actor_mode == "repeat":
            return t.reshape(t.shape[0], self.cql.n_actions, b, t.shape[-1])
        return t.unsqueeze(1)

    def compute_losses(self, batch: Batch, noise: Noise, bc: bool) -> tuple[Tensor, dict[str, Tensor]]:
        c = self.cql
        k, b, n_act = batch.obs.shape[0], batch.obs.shape[1], c.n_actions
        autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext())
        entropy_alpha = self.log_alpha.exp().detach()
        with autocast:
            mean_r, log_std_r, next_mean_r, next_log_std_r = self._actor_pair(batch.obs, batch.next_obs)
            policy_actions, policy_log_prob = losses.squashed_gaussian_sample(
                self._shape_for_noise(mean_r, b).float(), self._shape_for_noise(log_std_r, b).float(), noise.policy)
            with torch.no_grad():
                next_actions, next_log_prob = losses.squashed_gaussian_sample(
                    self._shape_for_noise(next_mean_r, b).float(), self._shape_for_noise(next_log_std_r, b).float(),
                    noise.next_policy)
                samples = n_act if c.max_backup else 1
                next_q = self.target_critic(
                    _repeat(batch.next_obs, samples), next_actions[:, :samples].reshape(k, -1, self.act_dim)
                ).float().reshape(k, -1, samples, b)
                target = losses.td_target(
                    batch.rewards, batch.terminals, next_q, next_log_prob[:, :samples],
                    entropy_alpha, c.discount, c.deterministic_backup, c.max_backup)

            actions = torch.cat([batch.actions.unsqueeze(1), noise.uniform, policy_actions.detach(), next_actions],
                                dim=1)
            q_all = self.critic(_repeat(batch.obs, 1 + 3 * n_act), actions.reshape(k, -1, self.act_dim)).float()
            q_all = q_all.reshape(k, -1, 1 + 3 * n_act, b)
            q_data = q_all[:, :, 0]
            gap = losses.conservative_gap(
                q_all[:, :, 1 : 1 + n_act], q_all[:, :, 1 + n_act : 1 + 2 * n_act],
                q_all[:, :, 1 + 2 * n_act :], q_data, policy_log_prob, next_log_prob,
                self.act_dim, c.temperature, c.importance_sampling, c.clip_diff_min, c.clip_diff_max)
            penalty, alpha_prime_loss, _ = losses.cql_penalty(
                gap.gap, c.alpha, c.lagrange, c.tau, self.log_alpha_prime)
            td = losses.td_loss(q_data, target)
            critic_loss = (td + penalty).sum(-1)

            frozen = [p.detach() for p in self.critic.net.param_list()]
            q_policy = self.critic(batch.obs, policy_actions[:, 0], params=frozen).float()
            q_policy_min = q_policy.min(dim=1).values
            bc_log_prob = None
            if bc:
                mean0 = self._shape_for_noise(mean_r, b)[:, 0].float()
                log_std0 = self._shape_for_noise(log_std_r, b)[:, 0].float()
                bc_log_prob = losses.squashed_gaussian_log_prob(mean0, log_std0, batch.actions)
            actor_loss = losses.actor_loss(entropy_alpha, policy_log_prob[:, 0], q_policy_min, bc_log_prob)
            alpha_loss = (losses.entropy_alpha_loss(self.log_alpha, policy_log_prob[:, 0], self.target_entropy)
                          if c.auto_entropy else torch.zeros_like(actor_loss))

        total = (critic_loss + actor_loss + alpha_loss + alpha_prime_loss).sum()
        metrics = {"loss/critic": critic_loss, "loss/actor": actor_loss, "q/data": q_data.mean(dim=(1, 2))}
        return total, {name: value.detach() for name, value in metrics.items()}


def set_losses(agent: CQLAgent, fn: Callable[..., Any] | None = None) -> CQLAgent:
    """Make ``update`` use ``fn`` (default: the agent's class's compute_losses). CQLAgent
    binds its loss function at construction (``self._losses``, compiled or not), so a
    swapped class or a compiled copy must be routed there too."""
    fn = fn or types.MethodType(type(agent).compute_losses, agent)
    agent.compute_losses = fn
    if hasattr(agent, "_losses"):
        agent._losses = fn
    return agent


def _variant_agent(make_agent: Callable[..., CQLAgent], args: argparse.Namespace, actor_mode: str) -> CQLAgent:
    agent = make_agent(args)
    if not agent.conservative:
        raise ValueError("the variants cover the standard workload (cql.alpha > 0)")
    agent.__class__ = type(f"VariantAgent_{actor_mode}", (VariantAgent,), {"actor_mode": actor_mode})
    return set_losses(agent)


# name → (description, builder(make_agent, args) -> agent, enter/exit hooks or None)
def _threads_hooks(n: int) -> tuple[Callable[[], None], Callable[[], None]]:
    saved = {}

    def enter() -> None:
        saved["n"] = torch.get_num_threads()
        torch.set_num_threads(n)

    def exit_() -> None:
        torch.set_num_threads(saved["n"])

    return enter, exit_


def variant_specs() -> dict[str, dict[str, Any]]:
    def plain(make_agent: Callable[..., CQLAgent], args: argparse.Namespace) -> CQLAgent:
        return make_agent(args)

    def net(**opts: bool) -> Callable[..., CQLAgent]:
        return lambda make_agent, args: patch_networks(make_agent(args), **opts)

    def actor(mode: str) -> Callable[..., CQLAgent]:
        return lambda make_agent, args: _variant_agent(make_agent, args, mode)

    def compiled(options: dict[str, Any] | None = None) -> Callable[..., CQLAgent]:
        def build(make_agent: Callable[..., CQLAgent], args: argparse.Namespace) -> CQLAgent:
            agent = make_agent(args)
            losses = types.MethodType(type(agent).compute_losses, agent)
            return set_losses(agent, torch.compile(losses, dynamic=False, options=options))
        return build

    return {
        "copy_control": {"idea": "control", "desc": "the copy of compute_losses, no idea (measures the copy)",
                         "build": actor("current")},
        "batched": {"idea": "a", "desc": "one baddbmm per layer for all members (the GPU path; ours on CPU before)",
                    "build": net()},
        "separate_critics": {"idea": "a", "desc": "one addmm chain per critic instead of one baddbmm",
                             "build": net(separate=True)},
        "actor_stacked": {"idea": "b", "desc": "one actor forward over [s; s'] (s' half detached)",
                          "build": actor("stacked")},
        "actor_repeat": {"idea": "b", "desc": "actor on N*B repeated states (d3rlpy style)", "build": actor("repeat")},
        "compile": {"idea": "c", "desc": "torch.compile(compute_losses)", "build": compiled(), "warmup": 3,
                    "optional": True},
        "compile_autotune": {"idea": "c", "desc": "torch.compile(compute_losses) with max_autotune (ATen vs C++ GEMM)",
                             "build": compiled({"max_autotune": True, "max_autotune_gemm_backends": "ATEN,CPP"}),
                             "warmup": 3, "optional": True},
        "threads1": {"idea": "e", "desc": "torch.set_num_threads(1) around the step", "build": plain, "threads": 1},
        "relu_inplace": {"idea": "f", "desc": "F.relu_ in the MLPs", "build": net(relu_inplace=True)},
        "fast_out_layer": {"idea": "f", "desc": "H->1 critic head with a GEMV-friendly custom backward",
                           "build": net(fast_out=True)},
        "out_layer_2d": {"idea": "a/f", "desc": "only the H->1 head per critic as 2-D addmm (hidden layers baddbmm)",
                         "build": net(out_2d=True)},
        "fused_best": {"idea": "f", "desc": "relu_inplace + fast_out_layer",
                       "build": net(relu_inplace=True, fast_out=True)},
        "all_best": {"idea": "a+f", "desc": "separate_critics + relu_inplace + fast_out_layer",
                     "build": net(separate=True, relu_inplace=True, fast_out=True)},
        "all_best_threads1": {"idea": "e+a+f", "desc": "all_best at 1 thread",
                              "build": net(separate=True, relu_inplace=True, fast_out=True), "threads": 1},
    }


# CQLAgent on CPU now runs all_best (networks.py's per-member path); "batched" is the one-kernel path it replaced.
DEFAULT_VARIANTS = ["batched", "separate_critics", "fast_out_layer", "all_best", "compile", "threads1"]


def build_variants(ctx: dict[str, Any], names: Sequence[str] | None = None) -> list[Any]:
    """Rows for scripts/bench.py: each variant's update on the same pre-sampled batches."""
    args, data, device = ctx["args"], ctx["data"], ctx["device"]
    Workload = ctx["Workload"]
    from cql_runner.data.buffer import DeviceSampler

    specs = variant_specs()
    rows = []
    for name in names or DEFAULT_VARIANTS:
        spec = specs[name]
        agent = spec["build"](ctx["make_agent"], args)
        next_batch = ctx["cycle"](ctx["batch_pool"](DeviceSampler(data, seeds=[0], device=device), args.batch))
        enter = exit_ = None
        if spec.get("threads"):
            enter, exit_ = _threads_hooks(spec["threads"])
        rows.append(Workload(f"v_{name}", f"variant ({spec['idea']}) {name}",
                             (lambda a=agent, nb=next_batch: a.update(nb())), group="variant",
                             warmup=max(spec.get("warmup", 0), args.warmup), note=spec["desc"],
                             optional=spec.get("optional", False),
                             enter=enter, exit=exit_))
    return rows


# ----- correctness of the variants -------------------------------------------------------
def check(args: argparse.Namespace, names: Sequence[str]) -> dict[str, float]:
    """Max relative difference of loss and gradients of each variant vs the real agent."""
    sys.path.insert(0, str(HERE))
    import bench

    data = bench.synthetic_data(10_000)
    from cql_runner.data.buffer import DeviceSampler

    batch = DeviceSampler(data, seeds=[0], device=args.device).sample(args.batch)
    ref = bench.make_agent(args)
    noise = ref.draw_noise(args.batch)

    def loss_and_grads(agent: CQLAgent) -> tuple[Tensor, list[Tensor]]:
        agent.zero_grad(set_to_none=True)
        total, _ = agent.compute_losses(batch, noise, False)
        total.backward()
        return total.detach(), [p.grad.clone() for p in agent.parameters() if p.grad is not None]

    ref_total, ref_grads = loss_and_grads(ref)
    out = {}
    specs = variant_specs()
    for name in names:
        agent = specs[name]["build"](bench.make_agent, args)
        total, grads = loss_and_grads(agent)
        rel = [float((total - ref_total).abs() / ref_total.abs().clamp_min(1e-12))]
        rel += [float((g - r).norm() / r.norm().clamp_min(1e-12)) for g, r in zip(grads, ref_grads)]
        if len(grads) != len(ref_grads):
            rel.append(float("inf"))
        out[name] = max(rel)
    return out


# ----- the study ---------------------------------------------------------------------------
def child(args: argparse.Namespace) -> None:
    """One fresh process: warm up, time --steps steps of the real agent, print steps/s."""
    sys.path.insert(0, str(HERE))
    import bench

    data = bench.synthetic_data(100_000)
    from cql_runner.data.buffer import DeviceSampler

    agent = bench.make_agent(args)
    next_batch = bench.cycle(bench.batch_pool(DeviceSampler(data, seeds=[0], device=args.device), args.batch))
    for _ in range(args.warmup):
        agent.update(next_batch())
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(args.steps):
        agent.update(next_batch())
    print(json.dumps({"steps_per_s": args.steps / (time.perf_counter() - wall),
                      "cpu_steps_per_s": args.steps / max(time.process_time() - cpu, 1e-9)}))


def malloc_study(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    """Fresh subprocesses with and without MALLOC_ENV, in pairs of alternating order."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--batch", str(args.batch), "--n-actions", str(args.n_actions),
           "--threads", str(args.study_threads), "--hidden", *map(str, args.hidden)]
    base_env = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV}
    envs = {"default": base_env, "malloc": {**base_env, **MALLOC_ENV}}
    rates: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": []} for k in envs}
    for r in range(args.rounds):
        order = list(envs) if r % 2 == 0 else list(envs)[::-1]
        for name in order:
            res = subprocess.run(cmd, env=envs[name], capture_output=True, text=True, check=True)
            got = json.loads(res.stdout.strip().splitlines()[-1])
            rates[name]["wall"].append(got["steps_per_s"])
            rates[name]["cpu"].append(got["cpu_steps_per_s"])
        log(f"  malloc round {r + 1}/{args.rounds}: "
            + ", ".join(f"{k} {v['wall'][-1]:.2f}" for k, v in rates.items()))
    med = statistics.median
    pairs = list(zip(rates["malloc"]["wall"], rates["default"]["wall"]))
    out = {"env": MALLOC_ENV, "threads": args.study_threads, "rates": rates,
           "ratio": med(m / d for m, d in pairs), "ratio_min": min(m / d for m, d in pairs),
           "ratio_max": max(m / d for m, d in pairs),
           "steps_per_s": {k: med(v["wall"]) for k, v in rates.items()},
           "method": "a fresh subprocess per block (warmup, then --steps timed steps), default and malloc env "
                     "in pairs of alternating order; median of the paired ratios"}
    if args.study_threads == 1:
        out["ratio_cpu"] = med(m / d for m, d in zip(rates["malloc"]["cpu"], rates["default"]["cpu"]))
    return out


def profile_top(args: argparse.Namespace, n_ops: int = 12) -> list[dict[str, Any]]:
    sys.path.insert(0, str(HERE))
    import bench
    from torch.profiler import ProfilerActivity, profile

    from cql_runner.data.buffer import DeviceSampler

    agent = bench.make_agent(args)
    pool = bench.batch_pool(DeviceSampler(bench.synthetic_data(10_000), seeds=[0], device=args.device), args.batch)
    for b in pool[:3]:
        agent.update(b)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for b in pool[:3]:
            agent.update(b)
    events = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    return [{"op": e.key, "shapes": str(e.input_shapes)[:80], "calls_per_step": e.count / 3,
             "self_ms_per_step": e.self_cpu_time_total / 3 / 1e3, "share": e.self_cpu_time_total / total}
            for e in events[:n_ops]]


def sandwich_rounds(baseline: Any, rows: list[Any], args: argparse.Namespace, threads: int,
                    log: Callable[[str], None]) -> dict[str, dict[str, list[float]]]:
    """Time each row right after a baseline block, with one more baseline block at the end
    of the round: a row's ratio in a round is its rate over the mean of the two baseline
    blocks around it, so load that drifts over seconds cancels. With one thread the CPU
    time of the process is timed too: it does not count time the scheduler gave to others."""
    torch.set_num_threads(threads)
    for w in [baseline, *rows]:
        if w.enter:
            w.enter()
        for _ in range(max(w.warmup or 0, args.warmup)):
            w.step()
        if w.exit:
            w.exit()

    def block(w: Any) -> tuple[float, float]:
        if w.enter:
            w.enter()
        try:
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                w.step()
            return args.steps / (time.perf_counter() - wall), args.steps / max(time.process_time() - cpu, 1e-9)
        finally:
            if w.exit:
                w.exit()

    out = {w.name: {"wall": [], "cpu": [], "ratio_wall": [], "ratio_cpu": []} for w in [baseline, *rows]}
    for r in range(args.rounds):
        shift = r % len(rows)
        order = rows[shift:] + rows[:shift]
        base = [block(baseline)]
        got = []
        for w in order:
            got.append(block(w))
            base.append(block(baseline))
        for i, (w, (wall, cpu)) in enumerate(zip(order, got)):
            b_wall = (base[i][0] + base[i + 1][0]) / 2
            b_cpu = (base[i][1] + base[i + 1][1]) / 2
            rec = out[w.name]
            rec["wall"].append(wall)
            rec["cpu"].append(cpu)
            rec["ratio_wall"].append(wall / b_wall)
            rec["ratio_cpu"].append(cpu / b_cpu)
        out[baseline.name]["wall"] += [b[0] for b in base]
        out[baseline.name]["cpu"] += [b[1] for b in base]
        log(f"  round {r + 1}/{args.rounds} ({threads} thread(s)): "
            + ", ".join(f"{w.name} x{out[w.name]['ratio_wall'][-1]:.2f}" for w in rows))
    return out


def _summary(rec: dict[str, list[float]], cpu_valid: bool) -> dict[str, Any]:
    med = statistics.median
    res = {"steps_per_s": med(rec["wall"]), "min": min(rec["wall"]), "max": max(rec["wall"])}
    if rec["ratio_wall"]:
        res.update(ratio=med(rec["ratio_wall"]), ratio_min=min(rec["ratio_wall"]), ratio_max=max(rec["ratio_wall"]))
    if cpu_valid:
        res["cpu_steps_per_s"] = med(rec["cpu"])
        if rec["ratio_cpu"]:
            res["ratio_cpu"] = med(rec["ratio_cpu"])
    return res


def study(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    import bench

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    device = torch.device(args.device)
    data = bench.synthetic_data(100_000)
    from cql_runner.data.buffer import DeviceSampler

    specs = variant_specs()
    names = [n for n in (args.only or list(specs)) if not specs[n].get("threads")]
    log("checking that every variant computes the same loss and gradients ...")
    diffs = check(args, names)
    ctx = {"args": args, "data": data, "device": device, "make_agent": bench.make_agent,
           "batch_pool": bench.batch_pool, "cycle": bench.cycle, "Workload": bench.Workload}

    def baseline_row() -> Any:
        agent = bench.make_agent(args)
        nb = bench.cycle(bench.batch_pool(DeviceSampler(data, seeds=[0], device=device), args.batch))
        return bench.Workload("baseline", "baseline (CQLAgent)", lambda: agent.update(nb()))

    load_before = os.getloadavg()
    # Part 1: the ideas at a fixed thread count (default 1: robust to other processes' load).
    baseline = baseline_row()
    rows = build_variants(ctx, names)
    log(f"ideas a, b, c, f: {len(rows)} variants, {args.rounds} sandwiched rounds of {args.steps} steps, "
        f"{args.study_threads} thread(s) ...")
    part1 = sandwich_rounds(baseline, rows, args, args.study_threads, log)
    cpu_valid = args.study_threads == 1
    table = []
    for w in rows:
        name = w.name.removeprefix("v_")
        table.append({"variant": name, "idea": specs[name]["idea"], "desc": specs[name]["desc"],
                      "threads": args.study_threads, "max_rel_diff": diffs[name],
                      **_summary(part1[w.name], cpu_valid)})
    result: dict[str, Any] = {
        "config": {"hidden": args.hidden, "batch": args.batch, "n_actions": args.n_actions, "rounds": args.rounds,
                   "steps": args.steps, "warmup": args.warmup, "study_threads": args.study_threads,
                   "cores": os.cpu_count(), "loadavg_before": load_before},
        "baseline": _summary(part1["baseline"], cpu_valid),
        "variants": table,
        "method": ("sandwiched rounds: baseline block, variant block, baseline block ...; a round's ratio is the "
                   "variant's steps/s over the mean of the two baseline blocks around it; the table gives the "
                   "median (min-max) over rounds. ratio_cpu uses process CPU time instead of wall time (valid "
                   "with one thread only: it ignores time the scheduler gave to other processes)."),
    }
    # Part 2 (idea e): threads 1 vs torch's default, wall time only (CPU time means nothing across thread counts).
    if not args.no_threads:
        default_threads = args.default_threads
        base2 = baseline_row()
        t_in, t_out = _threads_hooks(1)
        one = bench.Workload("threads1", "1 thread", base2.step, enter=t_in, exit=t_out)
        best_spec = specs["all_best"]
        best_agent = best_spec["build"](bench.make_agent, args)
        nb = bench.cycle(bench.batch_pool(DeviceSampler(data, seeds=[0], device=device), args.batch))
        e_in, e_out = _threads_hooks(1)
        best1 = bench.Workload("all_best_threads1", "all_best, 1 thread", lambda: best_agent.update(nb()),
                               enter=e_in, exit=e_out)
        log(f"idea e: 1 thread vs {default_threads} threads ...")
        part2 = sandwich_rounds(base2, [one, best1], args, default_threads, log)
        result["threads"] = {
            "baseline_threads": default_threads,
            "baseline": _summary(part2["baseline"], False),
            "threads1": _summary(part2["threads1"], False),
            "all_best_threads1": _summary(part2["all_best_threads1"], False),
        }
        torch.set_num_threads(args.study_threads)
    if not args.no_malloc:
        log("idea d: malloc env vars in fresh subprocesses ...")
        result["malloc"] = malloc_study(args, log)
    if not args.no_profile:
        torch.set_num_threads(args.study_threads)
        result["profile_top_ops"] = profile_top(args)
    result["config"]["loadavg_after"] = os.getloadavg()
    print(format_study(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _ratio_cell(v: dict[str, Any]) -> str:
    return f"{v['ratio']:.3f} ({v['ratio_min']:.2f}-{v['ratio_max']:.2f})"


def format_study(res: dict[str, Any]) -> str:
    b, cfg = res["baseline"], res["config"]
    lines = [f"baseline CQLAgent.update at {cfg['study_threads']} thread(s): {b['steps_per_s']:.2f} steps/s "
             f"({b['min']:.2f}-{b['max']:.2f}); load avg {cfg['loadavg_before'][0]:.1f} -> "
             f"{cfg['loadavg_after'][0]:.1f} on {cfg['cores']} cores",
             f"{'idea':<5} {'variant':<20} {'x baseline (min-max)':>22} {'x (CPU time)':>12} {'steps/s':>8} "
             f"{'rel diff':>8}  what",
             "-" * 120]
    for v in res["variants"]:
        cpu = f"{v['ratio_cpu']:.3f}" if "ratio_cpu" in v else "-"
        lines.append(f"{v['idea']:<5} {v['variant']:<20} {_ratio_cell(v):>22} {cpu:>12} {v['steps_per_s']:>8.2f} "
                     f"{v['max_rel_diff']:>8.0e}  {v['desc']}")
    if "threads" in res:
        t = res["threads"]
        for key, label in (("threads1", "threads1"), ("all_best_threads1", "all_best_thr1")):
            lines.append(f"{'e':<5} {label:<20} {_ratio_cell(t[key]):>22} {'-':>12} {t[key]['steps_per_s']:>8.2f} "
                         f"{'':>8}  vs baseline at {t['baseline_threads']} threads "
                         f"({t['baseline']['steps_per_s']:.2f} steps/s)")
    if "malloc" in res:
        m = res["malloc"]
        cpu = f"{m['ratio_cpu']:.3f}" if "ratio_cpu" in m else "-"
        lines.append(f"{'d':<5} {'malloc env':<20} {_ratio_cell(m):>22} {cpu:>12} "
                     f"{m['steps_per_s']['malloc']:>8.2f} {'':>8}  fresh subprocesses, {m['threads']} thread(s), "
                     f"vs {m['steps_per_s']['default']:.2f}")
    if "profile_top_ops" in res:
        lines += ["", f"top ops by self CPU time (baseline, {cfg['study_threads']} thread(s), per step):"]
        lines += [f"  {p['op'][:26]:<26} {p['self_ms_per_step']:8.1f} ms {100 * p['share']:5.1f}% "
                  f"x{p['calls_per_step']:<4.0f} {p['shapes']}" for p in res["profile_top_ops"]]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--study", action="store_true", help="time every variant vs the real agent")
    p.add_argument("--check", action="store_true", help="compare losses and gradients with the real agent")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--only", nargs="+", choices=list(variant_specs()), help="variants to include")
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256, 256])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--n-actions", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (--check, --child)")
    p.add_argument("--study-threads", type=int, default=1,
                   help="threads for timing the ideas (1: robust to other processes' load)")
    p.add_argument("--default-threads", type=int, default=torch.get_num_threads(),
                   help="the thread count idea e compares 1 thread with")
    p.add_argument("--no-threads", action="store_true", help="skip idea e")
    p.add_argument("--no-malloc", action="store_true")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        child(args)
    elif args.check:
        for name, diff in check(args, args.only or list(variant_specs())).items():
            print(f"{name:<22} max rel diff of loss and grads vs CQLAgent: {diff:.2e}")
    elif args.study:
        study(args)
    else:
        print(__doc__)


if __name__ == "__main__":
    main()
