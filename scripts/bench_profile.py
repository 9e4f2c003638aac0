#!/usr/bin/env python
"""Where one CQL step's time goes: kernels per step, their summed device time, and the step's time.

At batch 256 a GPU step is bound by how many kernels it runs, not by FLOPs, so this counts
them. For each variant (eager losses, compiled losses) it profiles ``--steps`` steps with
torch.profiler and reports per step: the number of device kernels, their summed execution
time, and the wall time of the same step replayed as a CUDA graph. Graph time minus kernel
time is what the gaps between kernels cost. On CPU it counts the non-view ATen ops a step
dispatches instead for the eager losses (each is at least one kernel on a GPU), so
kernel-count work can be checked without one.

    python scripts/bench_profile.py --device cuda --json profile-gpu.json
    python scripts/bench_profile.py --hidden 64 64 --json profile-cpu.json
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import bench  # scripts/bench.py, next to this file
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from cql_runner.data.buffer import DeviceSampler
from cql_runner.networks import EnsembleMLP
from cql_runner.update_step import EagerStep, GraphedStep

SCHEMA = "cql-runner-bench-profile/1"
# Ops that only make views or allocate: no kernel runs for them.
NO_KERNEL = {
    "view",
    "_unsafe_view",
    "expand",
    "unsqueeze",
    "squeeze",
    "slice",
    "select",
    "t",
    "transpose",
    "permute",
    "detach",
    "alias",
    "split",
    "split_with_sizes",
    "unbind",
    "as_strided",
    "reshape",
    "_reshape_alias",
    "lift_fresh",
    "empty",
    "empty_like",
    "new_empty",
    "empty_strided",
    "_record_function_enter_new",
    "_record_function_exit",
    "scalar_tensor",
}


class OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def use_batched_networks() -> None:
    """Make every EnsembleMLP take its batched (GPU) path, whatever the device."""
    forward = EnsembleMLP.forward

    def batched(self: EnsembleMLP, x: torch.Tensor, params: Any = None, per_member: bool | None = None) -> Any:
        return forward(self, x, params, per_member=False)

    EnsembleMLP.forward = batched  # type: ignore[method-assign]


def count_ops(step: EagerStep) -> dict[str, Any]:
    with OpCounter() as counter:
        step()
    kernels = {k: v for k, v in counter.counts.items() if k not in NO_KERNEL}
    return {"ops_per_step": sum(kernels.values()), "top_ops": dict(collections.Counter(kernels).most_common(15))}


def profile_kernels(step: EagerStep, steps: int) -> dict[str, Any]:
    """Device kernels per step and their summed time, from torch.profiler on CUDA."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    per_name: dict[str, list[float]] = collections.defaultdict(list)
    for e in kernels:
        per_name[e.name].append(e.device_time)
    top = sorted(per_name.items(), key=lambda kv: -sum(kv[1]))[:15]
    return {
        "kernels_per_step": len(kernels) / steps,
        "kernel_us_per_step": sum(e.device_time for e in kernels) / steps,
        "top_kernels": [
            {"name": n[:90], "calls_per_step": len(t) / steps, "us_per_step": sum(t) / steps} for n, t in top
        ],
    }


def time_steps(step: Any, steps: int, rounds: int, device: torch.device) -> list[float]:
    """Microseconds per step, one number per round."""
    row = bench.Workload("profiled", "profiled step", step)
    return [1e6 / bench.time_block(row, steps, device) for _ in range(rounds)]


def profile_variant(
    args: argparse.Namespace, data: Any, seeds: list[int], device: torch.device, name: str, compile: bool
) -> dict[str, Any]:
    agent = bench.make_agent(args, n_seeds=args.seeds, capturable=device.type == "cuda", compile=compile)
    step = EagerStep(agent, DeviceSampler(data, seeds=seeds, device=device), args.batch)
    for _ in range(5):
        step()
    # Under a dispatch mode dynamo falls back to eager, so only the eager variant is counted.
    entry: dict[str, Any] = {"variant": name, **(count_ops(step) if not compile else {})}
    entry["eager_us_per_step"] = time_steps(step, args.steps, args.rounds, device)
    if device.type == "cuda":
        entry.update(profile_kernels(step, args.steps))
        graphed = GraphedStep(agent, step.sampler, args.batch)
        for _ in range(5):
            graphed()
        entry["graph_us_per_step"] = time_steps(graphed, args.steps, args.rounds, device)
    return entry


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256, 256])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--n-actions", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seeds", type=int, default=1, help="K vectorised seeds in the profiled agent")
    p.add_argument("--steps", type=int, default=50, help="steps per profile and per timed round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--no-compile", action="store_true", help="profile the eager losses only")
    p.add_argument(
        "--gpu-path",
        action="store_true",
        help="on CPU, run the networks' GPU path (one baddbmm per layer), so the op count is a GPU's",
    )
    p.add_argument("--dataset-size", type=int, default=100_000)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    for name in ("batch", "n_actions", "seeds", "steps", "rounds", "dataset_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available in this torch ({torch.__version__})")
    torch.manual_seed(0)
    if args.gpu_path:
        use_batched_networks()
    data = bench.synthetic_data(args.dataset_size)
    seeds = list(range(args.seeds))
    variants = [("eager", False)] + ([] if args.no_compile else [("compiled", True)])
    results = []
    for name, compile in variants:
        print(f"{name}: building and warming up", file=sys.stderr, flush=True)
        try:
            results.append(profile_variant(args, data, seeds, device, name, compile))
        except Exception as exc:
            if not compile:
                raise
            # A failed compilation must not lose the eager numbers already measured.
            results.append({"variant": name, "error": " ".join(f"{type(exc).__name__}: {exc}".split())[:300]})

    report = {
        "schema": SCHEMA,
        "config": {
            "hidden": list(args.hidden),
            "batch": args.batch,
            "n_actions": args.n_actions,
            "seeds": args.seeds,
            "device": str(device),
            "steps": args.steps,
            "rounds": args.rounds,
            "network_path": "batched" if args.gpu_path or device.type != "cpu" else "per-member",
        },
        "machine": {
            **bench.cpu_info(),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        },
        "variants": results,
    }
    print(format_table(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _med(xs: list[float] | None) -> str:
    return "-" if not xs else f"{statistics.median(xs):.0f} ({min(xs):.0f}-{max(xs):.0f})"


def format_table(report: dict[str, Any]) -> str:
    c = report["config"]
    lines = [
        f"one CQL step, hidden {c['hidden']}, batch {c['batch']}, N {c['n_actions']}, {c['seeds']} seed(s), "
        f"{c['network_path']} networks, "
        f"{c['device']} ({report['machine']['gpu'] or report['machine']['model']}), torch "
        f"{report['machine']['torch']}",
        f"{'variant':<10} {'ATen ops':>9} {'kernels':>8} {'kernel us':>10} {'eager us/step':>20} {'graph us/step':>20}",
        "-" * 82,
    ]
    for v in report["variants"]:
        if "error" in v:
            lines.append(f"{v['variant']:<10} failed: {v['error']}")
            continue
        kernels = f"{v['kernels_per_step']:.0f}" if "kernels_per_step" in v else "-"
        kernel_us = f"{v['kernel_us_per_step']:.0f}" if "kernel_us_per_step" in v else "-"
        lines.append(
            f"{v['variant']:<10} {v.get('ops_per_step', '-'):>9} {kernels:>8} {kernel_us:>10} "
            f"{_med(v['eager_us_per_step']):>20} {_med(v.get('graph_us_per_step')):>20}"
        )
    for v in report["variants"]:
        if v.get("top_kernels"):
            lines.append(f"\n{v['variant']}: top kernels by device time per step")
            lines += [
                f"  {k['us_per_step']:8.1f} us {k['calls_per_step']:5.1f}x  {k['name']}" for k in v["top_kernels"]
            ]
        elif v.get("top_ops"):
            lines.append(
                f"\n{v['variant']}: top ATen ops per step: " + ", ".join(f"{n} {c}" for n, c in v["top_ops"].items())
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
