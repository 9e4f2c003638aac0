#!/usr/bin/env python
"""Speed benchmark of the CQL update: cql-runner against d3rlpy 2.8.1 on the same shapes.

The standard workload: Hopper shapes (obs 11, act 3), batch 256, 3×256 actor and twin
critics, N = 10 sampled actions per proposal, Lagrange on (τ = 10, α_cql = 5), synthetic
data. Every row of the table is timed in the same interleaved rounds (each round times
``--steps`` steps of every row, in an order rotated by one each round), so a load spike
from another process hits all rows alike. Per row we report the median steps/s over the
rounds with min–max; ratios are the median over rounds of the per-round ratio (the two
rows of a ratio are timed back to back in each round).

What is timed (sampling excluded for both, or included for both):
  ours fp32 update        CQLAgent.update(batch) on pre-sampled on-device batches
  ours fp32 sample+update DeviceSampler.sample(B) + CQLAgent.update: the real training step
  ours bf16 update        CQLAgent(bf16=True).update: bf16 autocast
  ours K seeds            K vectorised seeds' sample+update, steps/s summed over the seeds
  ours CUDA graph         train.cuda_graph=true: sample+update replayed as one graph (GPU only)
  ours CUDA graph+compile train.cuda_graph=true train.compile=true: the graph of the compiled step
  ours K seeds CUDA graph train.num_seeds=K train.cuda_graph=true, seed-steps/s (GPU only)
  ours online utd 1       the online phase of fine-tuning at online.utd=1 (OnlinePhase.advance):
                          one Hopper-v5 env step with the policy's sampled action, then one update
                          on a mixed batch (half offline, half from the online buffer), as env
                          steps/s; ``online.ratio_vs_offline`` sets it against the sample+update row
  d3rlpy fp32 update      CQLImpl.update(TorchMiniBatch) on pre-converted batches
  d3rlpy sample+update    CQL.update(ReplayBuffer.sample_transition_batch(B)): its real step
  gemm ceiling            (B·(1+3N)·n_critics/2 × H) @ (H × H) fp32 matmuls, as steps/s at
                          the FLOPs of one of our steps

``ratios.bf16`` is ours with bf16 autocast over d3rlpy fp32: d3rlpy 2.8.1 has no
mixed-precision switch, so fp32 is what its users run. On a CPU without AMX/AVX512-BF16
bf16 matmuls are emulated and far slower than fp32; the bf16 row then runs only
``--bf16-steps`` steps per round, and the notes say so.

This module is the benchmarks' one entry point for speed and holds their shared setup (synthetic data,
the agent builder, Workload rows and their interleaved timing); scripts/bench_profile.py imports it from
next door, and scripts/bench_memory.py measures memory in fresh processes.

    python scripts/bench.py --json bench.json
    python scripts/bench.py --rounds 3 --steps 10 --no-peer
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cql_runner.config import CQLConfig, EvalConfig, NetworkConfig, OnlineConfig, RunConfig, TrainConfig
from cql_runner.cql.agent import Batch, CQLAgent
from cql_runner.data.buffer import DeviceSampler
from cql_runner.data.types import DatasetMeta, OfflineData
from cql_runner.online.phase import OnlinePhase, online_setup
from cql_runner.update_step import GraphedStep

SCHEMA = "cql-runner-bench/1"
OBS_DIM, ACT_DIM, N_CRITICS = 11, 3, 2
# Pre-sampled batches cycled through by the "update only" rows.
POOL = 8


# ----- workloads ------------------------------------------------------------------------
@dataclass(eq=False)
class Workload:
    """One row of the table: ``step()`` is one unit of work, timed ``steps`` times a round."""

    name: str
    label: str
    step: Callable[[], Any]
    group: str = "ours"  # ours | peer | ceiling
    steps: int | None = None  # None: the --steps of the run
    warmup: int | None = None  # None: the --warmup of the run
    note: str = ""
    # Hooks run around the timed block of every round, outside the timing.
    enter: Callable[[], None] | None = None
    exit: Callable[[], None] | None = None
    # Work per step for the "% of ceiling" column; None: one of our CQL steps.
    flops: float | None = None
    # Agents (seeds) one step updates: rates count seed-steps, so K seeds in one call count K.
    agents: int = 1
    # A row whose warm-up raises is dropped with a note instead of ending the run (torch.compile rows).
    optional: bool = False
    rates: list[float] = field(default_factory=list)


def synthetic_data(
    size: int, obs_dim: int = OBS_DIM, act_dim: int = ACT_DIM, seed: int = 0, episode_len: int = 1000
) -> OfflineData:
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((size + 1, obs_dim)).astype(np.float32)
    timeouts = np.zeros(size, np.float32)
    timeouts[episode_len - 1 :: episode_len] = 1.0
    timeouts[-1] = 1.0
    return OfflineData(
        observations=obs[:-1],
        actions=rng.uniform(-1.0, 1.0, (size, act_dim)).astype(np.float32),
        rewards=rng.standard_normal(size).astype(np.float32),
        next_observations=obs[1:],
        terminals=np.zeros(size, np.float32),
        timeouts=timeouts,
        episode_starts=np.arange(0, size, episode_len, dtype=np.int64),
        meta=DatasetMeta(dataset_id="synthetic/hopper-shapes"),
    )


def make_agent(
    args: argparse.Namespace,
    bf16: bool = False,
    seed: int = 0,
    n_seeds: int = 1,
    capturable: bool = False,
    compile: bool = False,
) -> CQLAgent:
    network = NetworkConfig(hidden=list(args.hidden), n_critics=N_CRITICS)
    cql = CQLConfig(n_actions=args.n_actions, alpha=5.0, lagrange=True, tau=10.0)
    return CQLAgent(
        OBS_DIM,
        ACT_DIM,
        seeds=list(range(seed, seed + n_seeds)),
        network=network,
        cql=cql,
        device=args.device,
        bf16=bf16,
        capturable=capturable,
        compile=compile,
    )


def graph_row(
    args: argparse.Namespace,
    data: OfflineData,
    device: torch.device,
    name: str,
    label: str,
    note: str,
    n_seeds: int = 1,
    compile: bool = False,
) -> Workload:
    """A row of the real training step replayed as a CUDA graph (train.cuda_graph=true). A compiled
    step is optional: if its compilation fails the row is dropped with a note."""
    agent = make_agent(args, n_seeds=n_seeds, capturable=True, compile=compile)
    step = GraphedStep(agent, DeviceSampler(data, seeds=list(range(n_seeds)), device=device), args.batch)
    return Workload(name, label, step, agents=n_seeds, warmup=max(args.warmup, 5), optional=compile, note=note)


# Finished-episode rows put in the online buffer before timing, so every timed env step also updates.
ONLINE_PREFILL = 200


def online_row(
    args: argparse.Namespace, data: OfflineData, device: torch.device, stack: contextlib.ExitStack
) -> Workload:
    """The online phase's unit of work at online.utd=1, on the same agent, network and batch as
    the offline rows. The setup is what cql-train builds (online_setup from the run config, its
    defaults: utd 1, one env per seed); the envs stay open until ``stack`` closes."""
    total = args.warmup + args.rounds * args.steps + ONLINE_PREFILL
    cfg = RunConfig(
        online=OnlineConfig(steps=total, offline_ratio=0.5),
        train=TrainConfig(batch_size=args.batch),
        eval=EvalConfig(env_id=args.online_env),
    )
    sampler = DeviceSampler(data, seeds=[0], device=device, discount=cfg.cql.discount)
    phase = OnlinePhase(online_setup(cfg, data), make_agent(args), sampler, trainer=None, loggers=[])
    buf, rows = phase.buffers[0], ONLINE_PREFILL
    truncated = np.zeros(rows)
    truncated[-1] = 1.0
    buf.add_episode(
        buf.start_episode(0),
        data.observations[:rows],
        data.actions[:rows],
        data.rewards[:rows],
        data.next_observations[:rows],
        np.zeros(rows),
        truncated,
        discount=cfg.cql.discount,
        sparse_reward_neg=None,
    )
    envs = stack.enter_context(phase.open_envs())
    return Workload(
        "ours_online_utd1_sampled",
        "ours online env step+update (utd 1)",
        lambda: phase.advance(envs),
        note=f"{args.online_env} env step + 1 update on a half-offline mixed batch (OnlinePhase.advance)",
    )


def cycle(items: list[Any]) -> Callable[[], Any]:
    state = {"i": 0}

    def nxt() -> Any:
        item = items[state["i"] % len(items)]
        state["i"] += 1
        return item

    return nxt


def batch_pool(sampler: DeviceSampler, batch_size: int) -> list[Batch]:
    return [sampler.sample(batch_size) for _ in range(POOL)]


# ----- FLOPs ----------------------------------------------------------------------------
def mlp_gemm_flops(sizes: list[int], rows: int, forward: bool, grad_weights: bool, grad_input: bool) -> int:
    """GEMM FLOPs (2·m·k·n per matmul) of an MLP with layer ``sizes`` on ``rows`` rows.

    Backward costs one GEMM per layer for dW (if the weights need grad) and one for dX
    (layers after the first always, when anything upstream needs grad; the first layer
    only if the input itself needs grad). Bias adds, bias grads and activations are not
    GEMMs and are left out.
    """
    total = 0
    needs_dx = grad_input
    for fan_in, fan_out in itertools.pairwise(sizes):
        f = 2 * rows * fan_in * fan_out
        total += f if forward else 0
        total += f if grad_weights else 0
        total += f if needs_dx else 0
        needs_dx = needs_dx or grad_weights
    return total


def step_flops(
    hidden: list[int],
    batch: int,
    n_actions: int,
    obs_dim: int = OBS_DIM,
    act_dim: int = ACT_DIM,
    n_critics: int = N_CRITICS,
) -> dict[str, int]:
    """GEMM FLOPs of one CQLAgent.update, by part, for our formulation (K = 1, no max backup)."""
    actor = [obs_dim, *hidden, 2 * act_dim]
    critic = [obs_dim + act_dim, *hidden, 1]
    rows_q = (1 + 3 * n_actions) * batch * n_critics
    parts = {
        # π(s): forward with grad (actor loss); obs needs no grad.
        "actor pi(s) fwd+bwd": mlp_gemm_flops(actor, batch, True, True, False),
        # π(s′) under no_grad for the TD target and the n_j proposals.
        "actor pi(s') fwd": mlp_gemm_flops(actor, batch, True, False, False),
        # Target critics at (s′, a′): one sample, no grad.
        "target critics fwd": mlp_gemm_flops(critic, batch * n_critics, True, False, False),
        # One call for Q(s, a_data) and the 3N proposals, both critics; inputs need no grad.
        "critics Q(s, a|u|c|n) fwd+bwd": mlp_gemm_flops(critic, rows_q, True, True, False),
        # The actor's Q(s, ã) through detached critic weights: dX only, down to the action.
        "critics Q(s, pi) fwd+bwd(dX)": mlp_gemm_flops(critic, batch * n_critics, True, False, True),
    }
    parts["total"] = sum(parts.values())
    return parts


def counted_flops(update: Callable[[], Any]) -> int | None:
    """Matmul FLOPs of one real update by torch's FlopCounterMode (a cross-check)."""
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None
    with FlopCounterMode(display=False) as counter:
        update()
    return int(counter.get_total_flops())


# ----- the peer ---------------------------------------------------------------------------
def import_d3rlpy(peer_venv: Path | None = None) -> tuple[Any, str | None]:
    """(module, None) or (None, why it is missing). Its import prints gym/structlog noise.

    d3rlpy is never installed into our venv (it pins gymnasium==1.0.0). With ``peer_venv`` (built by
    ``python -m cql_runner.peers build``), that venv's site-packages is appended to sys.path, after
    ours: d3rlpy's own modules load from there while torch, numpy and gymnasium stay ours.
    """
    if peer_venv is not None:
        import site

        for sp in sorted(peer_venv.glob("lib/python*/site-packages")):
            site.addsitedir(str(sp))
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            import d3rlpy
        import logging

        import structlog

        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
        return d3rlpy, None
    except Exception as exc:  # ImportError, or a broken install
        return None, (
            f"d3rlpy is not importable ({type(exc).__name__}: {exc}); build the peer venv with "
            "`python -m cql_runner.peers build --venv .peer-venv` and pass --peer-venv .peer-venv"
        )


def d3rlpy_device(device: torch.device) -> str | bool:
    if device.type == "cuda":
        return f"cuda:{device.index or 0}"
    return "cpu:0"


def build_d3rlpy(d3rlpy: Any, args: argparse.Namespace, data: OfflineData) -> tuple[Any, Any, list[Any]]:
    """d3rlpy's CQL on the same shapes and hyperparameters, built from the same data."""
    from d3rlpy.dataset import MDPDataset
    from d3rlpy.models.encoders import VectorEncoderFactory
    from d3rlpy.torch_utility import TorchMiniBatch

    with contextlib.redirect_stdout(io.StringIO()):
        dataset = MDPDataset(
            observations=data.observations,
            actions=data.actions,
            rewards=data.rewards,
            terminals=data.terminals,
            timeouts=data.timeouts,
            action_space=d3rlpy.ActionSpace.CONTINUOUS,
        )
    encoder = VectorEncoderFactory(hidden_units=list(args.hidden))
    cfg = d3rlpy.algos.CQLConfig(
        batch_size=args.batch,
        gamma=0.99,
        tau=5e-3,
        n_critics=N_CRITICS,
        n_action_samples=args.n_actions,
        conservative_weight=5.0,
        alpha_threshold=10.0,
        actor_learning_rate=1e-4,
        critic_learning_rate=3e-4,
        temp_learning_rate=3e-4,
        alpha_learning_rate=3e-4,
        initial_temperature=1.0,
        initial_alpha=1.0,
        soft_q_backup=False,
        max_q_backup=False,
        actor_encoder_factory=encoder,
        critic_encoder_factory=encoder,
    )
    algo = cfg.create(device=d3rlpy_device(torch.device(args.device)))
    algo.build_with_dataset(dataset)
    pool = [
        TorchMiniBatch.from_batch(
            dataset.sample_transition_batch(args.batch), gamma=0.99, compute_returns_to_go=False, device=algo._device
        )
        for _ in range(POOL)
    ]
    return algo, dataset, pool


# ----- the machine ----------------------------------------------------------------------
def cpu_info() -> dict[str, Any]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    model = next(
        (line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
        platform.processor() or "unknown",
    )
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    simd = sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "f16c")))
    return {
        "model": model,
        "cores": os.cpu_count(),
        "simd_flags": simd,
        "bf16_hardware": bool({"amx_bf16", "avx512_bf16"} & flags),
    }


# ----- timing -----------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_block(w: Workload, n: int, device: torch.device) -> float:
    """Steps/s of ``n`` steps of ``w``."""
    if w.enter:
        w.enter()
    try:
        sync(device)
        start = time.perf_counter()
        for _ in range(n):
            w.step()
        sync(device)
        elapsed = time.perf_counter() - start
    finally:
        if w.exit:
            w.exit()
    return n * w.agents / max(elapsed, 1e-12)


def run_rounds(
    rows: list[Workload],
    args: argparse.Namespace,
    device: torch.device,
    log: Callable[[str], None],
    notes: list[str] | None = None,
) -> None:
    """Warm every row up, then time them in rotated rounds. An optional row whose warm-up fails is
    removed from ``rows`` and the failure goes into ``notes``."""
    for w in list(rows):
        n = args.warmup if w.warmup is None else w.warmup
        if n:
            log(f"  warmup {w.label} ({n} steps)")
            try:
                time_block(w, n, device)
            except Exception as exc:
                if not w.optional:
                    raise
                rows.remove(w)
                message = f"{w.label} dropped: its warm-up failed ({type(exc).__name__}: {str(exc)[:200]})"
                log(f"  {message}")
                if notes is not None:
                    notes.append(" ".join(message.split()))
    for r in range(args.rounds):
        shift = r % len(rows)
        for w in rows[shift:] + rows[:shift]:
            w.rates.append(time_block(w, w.steps or args.steps, device))
        log(f"  round {r + 1}/{args.rounds}: " + ", ".join(f"{w.name} {w.rates[-1]:.2f}" for w in rows))


def paired_ratio(a: Workload | None, b: Workload | None) -> float | None:
    if a is None or b is None or not a.rates or len(a.rates) != len(b.rates):
        return None
    return statistics.median(x / y for x, y in zip(a.rates, b.rates))


# ----- the run ----------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256, 256], help="hidden sizes, actor and critics")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--n-actions", type=int, default=10, help="N, actions per proposal")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    p.add_argument("--steps", type=int, default=20, help="steps of each row per round")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps of each row before the rounds")
    p.add_argument(
        "--bf16-steps",
        type=int,
        default=1,
        help="steps per round of the bf16 row when the CPU lacks bf16 hardware (it is ~5-100x slower)",
    )
    p.add_argument("--no-bf16", action="store_true", help="skip the bf16 row (ratios.bf16 becomes null)")
    p.add_argument("--no-peer", action="store_true", help="skip d3rlpy")
    p.add_argument(
        "--peer-venv",
        type=Path,
        default=None,
        help="a peer venv (python -m cql_runner.peers build --venv DIR) to import d3rlpy from",
    )
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument(
        "--seeds", type=int, default=8, help="K of the seed-vectorised row (K agents in one process); 1 skips the row"
    )
    p.add_argument(
        "--no-graph-compile",
        action="store_true",
        help="on CUDA, skip the CUDA graph + torch.compile row (its compilation takes minutes)",
    )
    p.add_argument("--dataset-size", type=int, default=1_000_000, help="synthetic transitions (Hopper-medium: 1M)")
    p.add_argument(
        "--online-env",
        default="Hopper-v5",
        help="env of the online fine-tuning row (obs 11, act 3: the bench's shapes)",
    )
    p.add_argument("--no-online", action="store_true", help="skip the online fine-tuning row")
    p.add_argument("--gemm-reps", type=int, default=20, help="matmuls per timed step of the ceiling row")
    p.add_argument("--json", type=Path, default=None, help="write the numbers here")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    for name in ("rounds", "steps", "batch", "n_actions", "bf16_steps", "gemm_reps", "dataset_size", "seeds"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:  # the online row's envs
        return _main(parse_args(argv), stack)


def _main(args: argparse.Namespace, stack: contextlib.ExitStack) -> dict[str, Any]:
    log = (lambda _msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available in this torch ({torch.__version__})")
    torch.manual_seed(0)
    notes: list[str] = []
    machine = {
        **cpu_info(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        machine["gpu"] = torch.cuda.get_device_name(device)

    log(f"building the workload: hidden {args.hidden}, batch {args.batch}, N {args.n_actions}, {device}")
    data = synthetic_data(args.dataset_size)
    rows: list[Workload] = []

    # Ours, fp32: update only, then the real training step (sampling + update).
    agent = make_agent(args)
    sampler = DeviceSampler(data, seeds=[0], device=device)
    next_batch = cycle(batch_pool(sampler, args.batch))
    ours = Workload("ours_fp32", "ours fp32 update", lambda: agent.update(next_batch()))
    agent_s = make_agent(args)
    sampler_s = DeviceSampler(data, seeds=[0], device=device)
    ours_s = Workload(
        "ours_fp32_sampled",
        "ours fp32 sample+update",
        lambda: agent_s.update(sampler_s.sample(args.batch)),
        note="DeviceSampler.sample + update: the real training step",
    )
    rows += [ours, ours_s]

    # The online phase of fine-tuning, against the same sample+update step.
    online = None
    if args.no_online:
        notes.append("online row skipped (--no-online)")
    else:
        try:
            online = online_row(args, data, device, stack)
        except Exception as exc:  # no MuJoCo, or an env of other shapes
            notes.append(f"online row missing: {args.online_env} failed ({type(exc).__name__}: {exc})")
        else:
            rows.append(online)

    # Seed-vectorised: K agents in one process, counted per seed-step.
    ours_k = None
    if args.seeds > 1:
        agent_k = make_agent(args, n_seeds=args.seeds)
        sampler_k = DeviceSampler(data, seeds=list(range(args.seeds)), device=device)
        ours_k = Workload(
            f"ours_seeds{args.seeds}_sampled",
            f"ours {args.seeds} seeds sample+update",
            lambda: agent_k.update(sampler_k.sample(args.batch)),
            agents=args.seeds,
            steps=max(1, args.steps // args.seeds),
            note=f"steps/s summed over {args.seeds} vectorised seeds (train.num_seeds)",
        )
        rows.append(ours_k)

    # Whole-step CUDA graph (train.cuda_graph=true): sampling and update replayed as one graph.
    ours_g = ours_gc = ours_gk = None
    if device.type == "cuda":
        ours_g = graph_row(
            args,
            data,
            device,
            "ours_cuda_graph_sampled",
            "ours CUDA graph sample+update",
            note="train.cuda_graph=true: the real training step",
        )
        rows.append(ours_g)
        if not args.no_graph_compile:
            ours_gc = graph_row(
                args,
                data,
                device,
                "ours_cuda_graph_compile_sampled",
                "ours CUDA graph+compile sample+update",
                compile=True,
                note="train.cuda_graph=true train.compile=true",
            )
            rows.append(ours_gc)
        if args.seeds > 1:
            ours_gk = graph_row(
                args,
                data,
                device,
                f"ours_seeds{args.seeds}_cuda_graph_sampled",
                f"ours {args.seeds} seeds CUDA graph sample+update",
                n_seeds=args.seeds,
                note=f"train.num_seeds={args.seeds} train.cuda_graph=true, seed-steps/s",
            )
            rows.append(ours_gk)

    # Ours, bf16 autocast.
    ours_bf16 = None
    bf16_hw = device.type == "cuda" or machine["bf16_hardware"]
    if args.no_bf16:
        notes.append("bf16 skipped (--no-bf16): ratios.bf16 is null")
    else:
        agent_bf16 = make_agent(args, bf16=True)
        next_batch_bf16 = cycle(batch_pool(DeviceSampler(data, seeds=[0], device=device), args.batch))
        ours_bf16 = Workload("ours_bf16", "ours bf16 update", lambda: agent_bf16.update(next_batch_bf16()))
        if not bf16_hw:
            ours_bf16.steps = args.bf16_steps
            ours_bf16.warmup = min(args.warmup, 1)
            ours_bf16.note = f"CPU lacks AMX/AVX512-BF16: {args.bf16_steps} step(s) per round"
            notes.append(
                f"This CPU has no bf16 hardware (no amx_bf16/avx512_bf16 in /proc/cpuinfo): bf16 matmuls "
                f"are emulated and far slower than fp32, so the bf16 row runs only {args.bf16_steps} "
                "step(s) per round. Train with train.bf16=false here."
            )
        rows.append(ours_bf16)

    # The peer.
    peer = peer_s = None
    peer_info: dict[str, Any] = {"name": "d3rlpy", "version": None, "available": False, "reason": None}
    if args.no_peer:
        peer_info["reason"] = "skipped (--no-peer)"
    else:
        d3rlpy, reason = import_d3rlpy(args.peer_venv)
        if d3rlpy is None:
            peer_info["reason"] = reason
        else:
            try:
                algo, _, pool = build_d3rlpy(d3rlpy, args, data)
                algo_s, dataset_s, _ = build_d3rlpy(d3rlpy, args, data)
            except Exception as exc:
                peer_info["reason"] = f"building d3rlpy's CQL failed: {type(exc).__name__}: {exc}"
            else:
                peer_info.update(version=d3rlpy.__version__, available=True)
                next_peer = cycle(pool)
                impl = algo._impl
                peer = Workload(
                    "d3rlpy_fp32",
                    "d3rlpy fp32 update",
                    lambda: impl.update(next_peer(), 0),
                    group="peer",
                    note="CQLImpl.update(TorchMiniBatch), batches pre-converted",
                )
                peer_s = Workload(
                    "d3rlpy_fp32_sampled",
                    "d3rlpy sample+update",
                    lambda: algo_s.update(dataset_s.sample_transition_batch(args.batch)),
                    group="peer",
                    note="CQL.update(ReplayBuffer.sample_transition_batch(B))",
                )
                rows += [peer, peer_s]
        if peer_info["reason"]:
            notes.append(f"peer missing: {peer_info['reason']}")
            log(f"  {peer_info['reason']}")

    # FLOPs of one step, analytic and counted.
    flops = step_flops(list(args.hidden), args.batch, args.n_actions)
    flop_agent, flop_batch = make_agent(args), next_batch()
    counted = counted_flops(lambda: flop_agent.update(flop_batch))
    peer_counted = counted_flops(peer.step) if peer is not None else None

    # The fp32 GEMM ceiling: the dominant matmul of a step, B·(1+3N) rows per critic.
    m, h = args.batch * (1 + 3 * args.n_actions), max(args.hidden)
    x = torch.randn(m, h, device=device)
    wt = torch.randn(h, h, device=device)
    out = torch.empty(m, h, device=device)

    def gemm() -> None:
        for _ in range(args.gemm_reps):
            torch.mm(x, wt, out=out)

    gemm_flops = 2.0 * m * h * h * args.gemm_reps
    ceiling = Workload(
        "gemm_ceiling",
        f"gemm ceiling ({m}x{h})@({h}x{h})",
        gemm,
        group="ceiling",
        flops=gemm_flops,
        note=f"{args.gemm_reps} fp32 matmuls per step",
    )
    rows.append(ceiling)

    # Each ratio's two rows next to each other, so they are timed back to back in a round.
    order = [ours, peer, online, ours_s, peer_s, ours_g, ours_gc, ours_k, ours_gk, ours_bf16, ceiling]
    rows = [w for w in order if w is not None and w in rows] + [w for w in rows if w not in order]

    log(f"timing {len(rows)} rows: warmup {args.warmup}, {args.rounds} rounds of {args.steps} steps")
    machine["loadavg_before"] = list(os.getloadavg())
    run_rounds(rows, args, device, log, notes)
    machine["loadavg_after"] = list(os.getloadavg())

    # ----- results --------------------------------------------------------------------
    gflop_step = flops["total"] / 1e9
    ceiling_gflops = [r * gemm_flops / 1e9 for r in ceiling.rates]
    ceiling_gflops_med = statistics.median(ceiling_gflops)
    results = []
    for w in rows:
        med = statistics.median(w.rates)
        entry: dict[str, Any] = {
            "name": w.name,
            "label": w.label,
            "group": w.group,
            "steps_per_s": {"median": med, "min": min(w.rates), "max": max(w.rates)},
            "per_round": w.rates,
            "steps_per_round": w.steps or args.steps,
            "note": w.note,
        }
        if w.group != "ceiling":
            entry["ratio_vs_d3rlpy"] = paired_ratio(w, peer_s if w.name.endswith("_sampled") else peer)
            entry["ratio_vs_ours_fp32"] = paired_ratio(w, ours)
            entry["fraction_of_ceiling"] = paired_ratio(w, ceiling) * (flops["total"] / gemm_flops)
            entry["agents"] = w.agents
        else:
            entry["gflops"] = {"median": ceiling_gflops_med, "min": min(ceiling_gflops), "max": max(ceiling_gflops)}
        results.append(entry)

    report = {
        "schema": SCHEMA,
        "config": {
            "obs_dim": OBS_DIM,
            "act_dim": ACT_DIM,
            "hidden": list(args.hidden),
            "batch": args.batch,
            "n_actions": args.n_actions,
            "n_critics": N_CRITICS,
            "lagrange": True,
            "tau": 10.0,
            "alpha": 5.0,
            "device": str(device),
            "rounds": args.rounds,
            "steps": args.steps,
            "warmup": args.warmup,
            "bf16_steps": ours_bf16.steps if ours_bf16 else None,
            "dataset_size": args.dataset_size,
        },
        "machine": machine,
        "peer": peer_info,
        "rows": results,
        "ratios": {"fp32": paired_ratio(ours, peer), "bf16": paired_ratio(ours_bf16, peer)},
        "ratios_sampled": {
            "fp32": paired_ratio(ours_s, peer_s),
            "cuda_graph": paired_ratio(ours_g, peer_s),
            "cuda_graph_compile": paired_ratio(ours_gc, peer_s),
        },
        "seeds": {
            "k": args.seeds if ours_k else 1,
            "aggregate_steps_per_s": statistics.median(ours_k.rates) if ours_k else None,
            # Aggregate seed-steps/s of K vectorised seeds over one seed's steps/s, same round.
            "ratio_vs_single": paired_ratio(ours_k, ours_s),
            # The same with both sides replayed as CUDA graphs (GPU only).
            "cuda_graph_aggregate_steps_per_s": statistics.median(ours_gk.rates) if ours_gk else None,
            "cuda_graph_ratio_vs_single": paired_ratio(ours_gk, ours_g),
        },
        "online": {
            "env": None if online is None else args.online_env,
            "utd": 1,
            "offline_ratio": 0.5,
            # Env steps/s, each with its one update; and over the offline sample+update step, same round.
            "env_steps_per_s": statistics.median(online.rates) if online else None,
            "ratio_vs_offline": paired_ratio(online, ours_s),
        },
        "flops": {
            "per_step": flops["total"],
            "gflop_per_step": gflop_step,
            "breakdown": {k: v for k, v in flops.items() if k != "total"},
            "counted_by_torch": counted,
            "peer_counted_by_torch": peer_counted,
            "method": "GEMM FLOPs (2mkn) of forward and backward, actor and critics, bias/elementwise excluded",
        },
        "ceiling": {
            "gemm": [m, h, h],
            "gflops": {"median": ceiling_gflops_med, "min": min(ceiling_gflops), "max": max(ceiling_gflops)},
            "steps_per_s_at_ceiling": ceiling_gflops_med / gflop_step,
        },
        "method": (
            "interleaved rounds (order rotated each round); steps/s median (min-max) over rounds; "
            "ratios are the median over rounds of per-round ratios"
        ),
        "notes": notes,
    }
    if report["ratios"]["bf16"] is None and "bf16" not in " ".join(notes):
        notes.append("ratios.bf16 is null: no peer to compare with")
    if report["ratios"]["fp32"] is None:
        notes.append("ratios are null: d3rlpy was not measured")

    print(format_table(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        log(f"wrote {args.json}")
    return report


def _fmt(x: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:{spec}}{suffix}"


def format_table(report: dict[str, Any]) -> str:
    c, m = report["config"], report["machine"]
    lines = [
        f"CQL update, obs {c['obs_dim']} act {c['act_dim']}, hidden {c['hidden']}, batch {c['batch']}, "
        f"N {c['n_actions']}, twin Q, Lagrange; {c['device']} ({m['model']}, {m['cores']} cores, "
        f"{m['threads']} threads), torch {m['torch']}, peer d3rlpy {report['peer']['version'] or 'missing'}",
        f"{c['rounds']} interleaved rounds x {c['steps']} steps (warmup {c['warmup']}); load avg "
        f"{m['loadavg_before'][0]:.1f} -> {m['loadavg_after'][0]:.1f}; "
        f"one step = {report['flops']['gflop_per_step']:.2f} GFLOP of GEMMs",
        "",
        f"{'row':<40} {'steps/s median (min-max)':>26} {'x d3rlpy':>9} {'x ours':>7} {'% ceiling':>10}",
        "-" * 96,
    ]
    for r in report["rows"]:
        s = r["steps_per_s"]
        rng = f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"
        if r["group"] == "ceiling":
            g = r["gflops"]
            rng = f"{g['median']:.0f} ({g['min']:.0f}-{g['max']:.0f}) GFLOP/s"
            lines.append(f"{r['label']:<40} {rng:>26}")
            continue
        lines.append(
            f"{r['label']:<40} {rng:>26} {_fmt(r['ratio_vs_d3rlpy']):>9} "
            f"{_fmt(r['ratio_vs_ours_fp32']):>7} {_fmt(100 * r['fraction_of_ceiling'], '.0f', '%'):>10}"
        )
    ceil = report["ceiling"]
    lines += [
        "-" * 96,
        f"fp32 ceiling: {ceil['gflops']['median']:.0f} GFLOP/s = {ceil['steps_per_s_at_ceiling']:.1f} steps/s "
        f"at {report['flops']['gflop_per_step']:.2f} GFLOP/step (torch's FlopCounter: "
        f"{_fmt((report['flops']['counted_by_torch'] or float('nan')) / 1e9)} GFLOP; d3rlpy's step: "
        f"{_fmt((report['flops']['peer_counted_by_torch'] or float('nan')) / 1e9)} GFLOP)",
        f"ratios (ours / d3rlpy, update only): fp32 {_fmt(report['ratios']['fp32'])}, "
        f"bf16 {_fmt(report['ratios']['bf16'])}; with sampling: fp32 {_fmt(report['ratios_sampled']['fp32'])}, "
        f"CUDA graph {_fmt(report['ratios_sampled']['cuda_graph'])}, "
        f"CUDA graph+compile {_fmt(report['ratios_sampled']['cuda_graph_compile'])}",
        f"{report['seeds']['k']} vectorised seeds: {_fmt(report['seeds']['aggregate_steps_per_s'])} seed-steps/s "
        f"in all, {_fmt(report['seeds']['ratio_vs_single'])}x one seed's sample+update",
        f"online fine-tuning ({report['online']['env'] or 'skipped'}, utd 1, half-offline batches): "
        f"{_fmt(report['online']['env_steps_per_s'])} env steps/s (each with its update), "
        f"{_fmt(report['online']['ratio_vs_offline'])}x the offline sample+update step",
    ]
    if report["seeds"]["cuda_graph_ratio_vs_single"] is not None:
        lines.append(
            f"{report['seeds']['k']} vectorised seeds as a CUDA graph: "
            f"{_fmt(report['seeds']['cuda_graph_aggregate_steps_per_s'])} seed-steps/s in all, "
            f"{_fmt(report['seeds']['cuda_graph_ratio_vs_single'])}x one seed's CUDA graph step"
        )
    lines += [f"note: {n}" for n in report["notes"]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
