#!/usr/bin/env python
"""Memory benchmark: resident size of a Hopper-shaped 1M-transition dataset in the training path.

The target (speed issue, memory part): the dataset takes no more than about 1.2x its float32
size in memory, and a training step makes no per-step copy of it.

The script builds (once) a synthetic Hopper-shaped Minari dataset (obs 11 float64 as Minari
stores Hopper, act 3) of ``--transitions`` steps in episodes of ``--episode-len``, and a small
control of ``--control`` steps, each in its own ``MINARI_DATASETS_PATH``. Every measurement then
runs in a fresh subprocess, so its RSS and peak start clean, through the code path of
``cql-train``: ``load_data`` of a composed config (``env=hopper-medium`` pointed at the built
dataset), ``DeviceSampler(data, seeds, 'cpu', discount)``, a ``CQLAgent`` built as ``run()``
builds it (3x256, twin critics), then ``--steps`` updates of ``agent.update(sampler.sample(B))``.
Each size is measured twice: a first load (Minari read + flatten + cache write, cache dir
emptied first) and a second load from the ``.npz`` cache.

What is reported, per measurement:
  data resident        RSS after the sampler - RSS after imports (the libraries either load
                       path imports, h5py included, and the composed config)
  ratio                data resident / float32 bytes of the sampler's tensors (observations,
                       actions, rewards, next_observations, terminals, returns_to_go)
  step overhead        peak RSS during the steps - RSS before the steps, after --warmup steps
                       and a malloc_trim (so free heap pages do not absorb part of a step).
                       The peak counter (VmHWM, the one ru_maxrss reads) is reset with
                       /proc/self/clear_refs before each step, so an earlier peak (the load)
                       cannot mask it; per-step overheads are in the JSON.
  alloc/step           bytes torch allocates in one step (torch profiler), and the largest op

A step that copied the dataset would make the large overhead exceed the control's by about the
dataset size, and its largest allocation would be dataset-sized.

    python scripts/bench_memory.py --json bench_memory.json
    python scripts/bench_memory.py --transitions 5000 --control 1000 --steps 3
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import gc
import importlib
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SCHEMA = "cql-runner-bench-memory/1"
OBS_DIM, ACT_DIM = 11, 3
DATASET_ID = "mujoco/hopper/membench-v0"
# The pass criteria of the issue.
MAX_RATIO = 1.2
MAX_STEP_EXCESS_FRACTION = 0.1
MIB = 2**20


# ----- resident memory ------------------------------------------------------------------
def rss_bytes() -> int:
    """Current resident set size; ru_maxrss (the peak so far) where /proc is missing."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return maxrss_bytes()


def maxrss_bytes() -> int:
    """ru_maxrss in bytes (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def hwm_bytes() -> int | None:
    """VmHWM, the peak RSS the kernel tracks (and ru_maxrss reports), or None without /proc."""
    try:
        with open("/proc/self/status") as f:
            m = re.search(r"^VmHWM:\s+(\d+) kB", f.read(), re.M)
    except OSError:
        return None
    return int(m.group(1)) * 1024 if m else None


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the next peak covers only what follows.

    Without this ru_maxrss is the process's lifetime peak, and a load's transient would hide
    anything a step allocates.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    hwm = hwm_bytes()
    return hwm is not None and hwm <= rss_bytes() + 4 * MIB


def settled_rss() -> int:
    gc.collect()
    return rss_bytes()


# ----- the datasets -----------------------------------------------------------------------
def dataset_ready(root: Path, transitions: int) -> bool:
    meta = root / DATASET_ID / "data" / "metadata.json"
    try:
        return int(json.loads(meta.read_text()).get("total_steps", -1)) == transitions
    except (OSError, ValueError):
        return False


def build_dataset(root: Path, transitions: int, episode_len: int, seed: int = 0) -> Path:
    """Write a Hopper-shaped random-walk Minari dataset into ``root`` with Minari's own writer.

    Episodes are ``episode_len`` steps (the last one shorter if needed); every tenth ends in a
    termination, the rest in a truncation, like the time-limited Hopper data. Observations are
    float64, as Minari stores Hopper's, so the loader's float64 -> float32 path is exercised.
    Reuses an existing dataset of the same size.
    """
    if dataset_ready(root, transitions):
        return root / DATASET_ID
    import gymnasium as gym
    import minari
    import numpy as np
    from minari.data_collector import EpisodeBuffer

    shutil.rmtree(root / DATASET_ID, ignore_errors=True)
    rng = np.random.default_rng(seed)
    buffers = []
    for e, start in enumerate(range(0, transitions, episode_len)):
        n = min(episode_len, transitions - start)
        obs = np.cumsum(0.1 * rng.standard_normal((n + 1, OBS_DIM)), axis=0)
        terminations = np.zeros(n, bool)
        truncations = np.zeros(n, bool)
        (terminations if e % 10 == 9 else truncations)[-1] = True
        buffers.append(
            EpisodeBuffer(
                id=e,
                seed=seed + e,
                observations=obs,
                actions=rng.uniform(-1.0, 1.0, (n, ACT_DIM)).astype(np.float32),
                rewards=rng.standard_normal(n),
                terminations=terminations,
                truncations=truncations,
            )
        )
    obs_space = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float64)
    act_space = gym.spaces.Box(-1.0, 1.0, (ACT_DIM,), np.float32)
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        try:  # Hopper's own spec when mujoco is installed, so the metadata looks like the real thing.
            env: Any = gym.spec("Hopper-v5") if _can_make("Hopper-v5") else None
        except gym.error.Error:
            env = None
        minari.create_dataset_from_buffers(
            dataset_id=DATASET_ID,
            buffer=buffers,
            env=env,
            eval_env=env,
            observation_space=None if env else obs_space,
            action_space=None if env else act_space,
            algorithm_name="random-walk",
            author="cql-runner bench",
            author_email="bench@example.invalid",
            code_permalink="https://example.invalid/cql-runner",
            description="synthetic Hopper-shaped data",
        )
    finally:
        if previous is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous
    return root / DATASET_ID


def _can_make(env_id: str) -> bool:
    import gymnasium as gym

    try:
        gym.make(env_id).close()
    except Exception:  # no mujoco: fall back to the bare spaces
        return False
    return True


# ----- one measurement (runs in a fresh subprocess) --------------------------------------
def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """RSS at each stage of loading + sampling + stepping, in this (fresh) process."""
    rss_start = rss_bytes()
    import torch
    from hydra import compose, initialize_config_module

    import cql_runner.data.minari_source  # noqa: F401 (imported before the baseline, as load_data would)
    from cql_runner.config import register_configs
    from cql_runner.cql.agent import CQLAgent
    from cql_runner.data.buffer import DeviceSampler
    from cql_runner.data.memory import release_freed_memory
    from cql_runner.run import load_data, seed_everything

    # Code the first load imports lazily (Minari's hdf5 storage: h5py and libhdf5, ~13 MB of
    # pages) is imported here, so the baseline holds it and "resident" counts only data.
    with contextlib.suppress(ImportError):
        importlib.import_module("minari.dataset._storages.hdf5_storage")
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    register_configs()
    overrides = [
        "env=hopper-medium",
        "dataset.path=null",
        f"dataset.id={DATASET_ID}",
        f"dataset.cache_dir={spec['cache_dir']}",
        "logger=none",
        "device=cpu",
    ]
    with initialize_config_module("cql_runner.conf", version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    seeds = [int(cfg.seed)]
    seed_everything(seeds[0])
    out: dict[str, Any] = {"transitions": spec["transitions"], "load": spec["load"]}
    out["rss_start"] = rss_start
    out["rss_after_imports"] = base = settled_rss()

    # Whether this load reads the .npz cache (a "cached" run without one is a first load).
    out["cache_hit"] = any(Path(spec["cache_dir"]).glob("*.npz"))
    t0 = time.perf_counter()
    data = load_data(cfg)
    out["load_s"] = time.perf_counter() - t0
    out["rss_after_load"] = settled_rss()
    out["peak_through_load"] = maxrss_bytes()

    sampler = DeviceSampler(data, seeds, "cpu", discount=cfg.cql.discount)
    out["rss_after_sampler"] = settled_rss()
    held = {
        name: getattr(sampler, name)
        for name in ("observations", "actions", "rewards", "next_observations", "terminals", "returns_to_go")
    }
    held = {k: v for k, v in held.items() if v is not None}
    out["sampler_tensors"] = {
        k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", ""), "bytes": v.numel() * v.element_size()}
        for k, v in held.items()
    }
    out["dataset_float32_bytes"] = sum(v["bytes"] for v in out["sampler_tensors"].values())
    # Everything OfflineData holds (timeouts and episode_starts stay on the host side only).
    arrays = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts", "episode_starts")
    out["offline_data_bytes"] = sum(getattr(data, a).nbytes for a in arrays)
    out["sampler_shares_host_arrays"] = all(
        held[a].data_ptr() == getattr(data, a).ctypes.data for a in arrays if a in held
    )
    out["data_resident_bytes"] = out["rss_after_sampler"] - base
    out["ratio_resident_to_float32"] = out["data_resident_bytes"] / out["dataset_float32_bytes"]

    agent = CQLAgent(
        data.obs_dim,
        data.act_dim,
        seeds,
        cfg.network,
        cfg.cql,
        torch.device("cpu"),
        obs_mean=data.meta.extra.get("obs_mean"),
        obs_std=data.meta.extra.get("obs_std"),
        bf16=cfg.train.bf16,
        compile=cfg.train.compile,
    )
    out["network"] = {"hidden": list(cfg.network.hidden), "n_critics": int(cfg.network.n_critics)}
    out["rss_after_agent"] = before = settled_rss()

    batch = int(cfg.train.batch_size)
    out["batch_size"] = batch
    # Warm-up: the first steps allocate once (Adam moments, autograd and allocator caches, heap
    # growth). They are reported apart; the overhead below is that of steady-state steps.
    peak_reset = reset_peak()
    for _ in range(spec["warmup"]):
        agent.update(sampler.sample(batch))
    hwm = hwm_bytes() if peak_reset else None
    out["peak_during_warmup"] = hwm if hwm is not None else maxrss_bytes()
    out["warmup_overhead_bytes"] = out["peak_during_warmup"] - before
    out["rss_after_warmup"] = settled_rss()
    # The baseline of the steps is what is live: free pages the warm-up left on the heap would
    # otherwise absorb part of a step's allocations, by an amount that varies from run to run.
    release_freed_memory()
    out["rss_before_steps"] = before = settled_rss()
    per_step: list[int] = []
    peaks: list[int] = []
    t0 = time.perf_counter()
    for _ in range(spec["steps"]):
        start = rss_bytes()
        peak_reset = reset_peak()
        agent.update(sampler.sample(batch))
        hwm = hwm_bytes() if peak_reset else None
        if hwm is not None:
            per_step.append(hwm - start)
            peaks.append(hwm)
    out["steps_s"] = time.perf_counter() - t0
    exact = len(per_step) == spec["steps"]
    out["peak_method"] = "VmHWM reset by clear_refs" if exact else "ru_maxrss (lifetime peak)"
    out["peak_during_steps"] = max(peaks) if exact else maxrss_bytes()
    out["per_step_overhead_bytes"] = per_step if exact else None
    out["median_step_overhead_bytes"] = int(statistics.median(per_step)) if exact else None
    out["ru_maxrss_after_steps"] = maxrss_bytes()
    out["rss_after_steps"] = settled_rss()
    out["step_overhead_bytes"] = out["peak_during_steps"] - before
    out.update(profile_step(lambda: agent.update(sampler.sample(batch))))
    # The steps did real work: the losses of one more step are finite.
    metrics = agent.update(sampler.sample(batch))
    out["losses_finite"] = bool(all(torch.isfinite(v).all() for v in metrics.values()))
    return out


def profile_step(step: Any) -> dict[str, Any]:
    """Bytes torch allocates during one step (sum over ops) and the largest single op's share.

    The sum counts every allocation, freed or not, so it bounds the step's traffic; a per-step
    copy of the dataset would show as an op allocating tens of MB.
    """
    try:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step()
        sizes = [e.self_cpu_memory_usage for e in prof.events() if e.name != "[memory]"]
        allocs = [s for s in sizes if s > 0]
        top = max(prof.events(), key=lambda e: e.self_cpu_memory_usage, default=None)
        return {
            "alloc_bytes_per_step": int(sum(allocs)),
            "largest_op_alloc_bytes": int(max(allocs, default=0)),
            "largest_op": top.name if top is not None else None,
        }
    except Exception as exc:  # optional: an old torch, a profiler that fails on this machine
        return {
            "alloc_bytes_per_step": None,
            "largest_op_alloc_bytes": None,
            "largest_op": None,
            "profile_error": f"{type(exc).__name__}: {exc}",
        }


def run_child(root: Path, transitions: int, load: str, cache_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in a fresh interpreter; its JSON is the last line of stdout."""
    if load == "first":
        shutil.rmtree(cache_dir, ignore_errors=True)
    spec = {
        "transitions": transitions,
        "load": load,
        "cache_dir": str(cache_dir),
        "steps": args.steps,
        "warmup": args.warmup,
        "threads": args.threads,
    }
    env = {
        **os.environ,
        "MINARI_DATASETS_PATH": str(root),
        "CQL_RUNNER_CACHE_DIR": str(cache_dir),
        "WANDB_MODE": "disabled",
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.child_timeout)
    if proc.returncode != 0:
        raise SystemExit(f"measurement {transitions} ({load} load) failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----- the run ----------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--transitions", type=int, default=1_000_000, help="transitions of the large dataset")
    p.add_argument("--control", type=int, default=10_000, help="transitions of the small control dataset")
    p.add_argument("--episode-len", type=int, default=1000)
    p.add_argument("--steps", type=int, default=20, help="update steps per measurement")
    p.add_argument("--warmup", type=int, default=3, help="update steps before the measured ones")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="keep the built datasets here and reuse them (default: a temp dir, removed after)",
    )
    p.add_argument(
        "--loads",
        default="both",
        choices=("both", "first", "cached"),
        help="which loads to measure: the first (Minari read + flatten + cache write), the cached",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        choices=(1, 2),
        help="sizes measured side by side (2 halves the wall time; RSS is per process)",
    )
    p.add_argument("--child-timeout", type=float, default=1800.0)
    p.add_argument("--json", type=Path, default=None, help="write the numbers here")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("transitions", "control", "episode_len", "steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    args.loads = ("first", "cached") if args.loads == "both" else (args.loads,)
    return args


def summarize(runs: list[dict[str, Any]], large: int, control: int) -> dict[str, Any]:
    big = {r["load"]: r for r in runs if r["transitions"] == large}
    small = {r["load"]: r for r in runs if r["transitions"] == control}
    dataset_bytes = next(iter(big.values()))["dataset_float32_bytes"]
    ratios = {load: r["ratio_resident_to_float32"] for load, r in big.items()}
    # A per-step copy would show in both loads; the larger of the two is the cautious figure.
    overhead = {
        "large": max(r["step_overhead_bytes"] for r in big.values()),
        "control": max(r["step_overhead_bytes"] for r in small.values()),
    }
    excess = overhead["large"] - overhead["control"]
    ratio = max(ratios.values())
    return {
        "dataset_float32_bytes": dataset_bytes,
        "ratio_resident_to_float32": ratio,
        "ratio_resident_to_float32_by_load": ratios,
        "step_overhead_bytes": overhead,
        "step_overhead_excess_bytes": excess,
        "pass": bool(ratio <= MAX_RATIO and excess < MAX_STEP_EXCESS_FRACTION * dataset_bytes),
        "criteria": {"max_ratio": MAX_RATIO, "max_step_excess_fraction_of_dataset": MAX_STEP_EXCESS_FRACTION},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(measure(json.loads(args.child))))
        return {}
    log = (lambda _msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    started = time.perf_counter()
    tmp = None
    if args.data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="cql-bench-memory-")
        base = Path(tmp.name)
    else:
        base = args.data_dir.expanduser().resolve()
    try:
        runs, build_s = [], {}
        sizes = [("large", args.transitions), ("control", args.control)]
        for label, n in sizes:
            root = base / f"minari-{n}"
            t0 = time.perf_counter()
            log(f"dataset {label}: {n} transitions in {root}")
            build_dataset(root, n, args.episode_len)
            build_s[label] = time.perf_counter() - t0

        def measure_size(label: str, n: int) -> list[dict[str, Any]]:
            # First, then cached: the cached load reads the cache the first one wrote (or an
            # earlier run's, in --data-dir, when only the cached load is asked for).
            root, out = base / f"minari-{n}", []
            for load in args.loads:
                log(f"measuring {label} ({n} transitions), {load} load, {args.steps} steps")
                out.append(run_child(root, n, load, root / ".cql_runner_cache", args))
            return out

        # Each measurement is its own process, so running sizes side by side (--jobs 2) leaves
        # every process's RSS as it was; only the wall time changes.
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for result in pool.map(lambda size: measure_size(*size), sizes):
                runs.extend(result)
    finally:
        if tmp is not None:
            tmp.cleanup()
    report = {
        "schema": SCHEMA,
        "config": {
            "obs_dim": OBS_DIM,
            "act_dim": ACT_DIM,
            "transitions": {"large": args.transitions, "control": args.control},
            "episode_len": args.episode_len,
            "steps": args.steps,
            "warmup": args.warmup,
            "threads": args.threads,
            "jobs": args.jobs,
            "loads": list(args.loads),
            "dataset_id": DATASET_ID,
            "env": "hopper-medium",
            "device": "cpu",
        },
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cores": os.cpu_count(),
            "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        **summarize(runs, args.transitions, args.control),
        "runs": runs,
        "build_s": build_s,
        "wall_s": time.perf_counter() - started,
    }
    print(format_table(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        log(f"wrote {args.json}")
    return report


def _mib(x: float | None) -> str:
    return "-" if x is None else f"{x / MIB:.1f}"


def format_table(report: dict[str, Any]) -> str:
    c = report["config"]
    lines = [
        f"Dataset memory, Hopper shapes (obs {c['obs_dim']}, act {c['act_dim']}), episodes of {c['episode_len']}, "
        f"{c['steps']} update steps per run, fresh process per row; MiB unless noted",
        "",
        f"{'transitions':>11} {'load':>6} {'f32 data':>9} {'imports':>8} {'+load':>8} {'+sampler':>9} "
        f"{'resident':>9} {'ratio':>6} {'+agent':>8} {'peak stp':>9} {'after':>8} {'overhead':>9} "
        f"{'alloc/stp':>9} {'max op':>7} {'load s':>7}",
        "-" * 134,
    ]
    for r in report["runs"]:
        lines.append(
            f"{r['transitions']:>11} {r['load']:>6} {_mib(r['dataset_float32_bytes']):>9} "
            f"{_mib(r['rss_after_imports']):>8} {_mib(r['rss_after_load']):>8} {_mib(r['rss_after_sampler']):>9} "
            f"{_mib(r['data_resident_bytes']):>9} {r['ratio_resident_to_float32']:>6.3f} "
            f"{_mib(r['rss_after_agent']):>8} {_mib(r['peak_during_steps']):>9} {_mib(r['rss_after_steps']):>8} "
            f"{_mib(r['step_overhead_bytes']):>9} {_mib(r['alloc_bytes_per_step']):>9} "
            f"{_mib(r['largest_op_alloc_bytes']):>7} {r['load_s']:>7.2f}"
        )
    o = report["step_overhead_bytes"]
    lines += [
        "-" * 134,
        "resident = RSS after sampler - RSS after imports; ratio = resident / f32 data (the sampler's tensors); "
        "overhead = peak during steps - RSS before steps",
        f"ratio (large, worst load): {report['ratio_resident_to_float32']:.3f} (<= {MAX_RATIO}); "
        f"step overhead large {_mib(o['large'])} vs control {_mib(o['control'])} MiB, excess "
        f"{_mib(report['step_overhead_excess_bytes'])} MiB (< {MAX_STEP_EXCESS_FRACTION:g} x "
        f"{_mib(report['dataset_float32_bytes'])} MiB); peak via {report['runs'][0]['peak_method']}",
        f"pass: {report['pass']}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
