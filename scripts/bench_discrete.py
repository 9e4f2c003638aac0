#!/usr/bin/env python
"""Speed of the discrete CQL update against d3rlpy 2.8.1's DiscreteCQL, and the memory of a frame load.

Two workloads, both Double DQN + CQL (α = 1, Huber TD, one Q-network, Adam), batch 32 by default:

  mlp  CartPole-like vectors: obs 4, 2 actions, hidden 256×256 (d3rlpy's default vector encoder)
  cnn  Atari-like frames: 4×84×84 uint8 stacks, 6 actions, the Nature-DQN CNN (32 8×8/4, 64 4×4/2,
       64 3×3/1, 512 units); d3rlpy gets its default pixel encoder (the same layers) and its
       PixelObservationScaler (÷255), we scale uint8 inside the CNN

Rows per workload (all timed in the interleaved rounds of scripts/bench.py, whose setup this imports):
  ours update         DiscreteCQLAgent.update on pre-sampled on-device batches
  ours sample+update  DiscreteSampler/FrameSampler.sample(B) + update: the real training step
  d3rlpy update       DiscreteCQLImpl.update(TorchMiniBatch) on pre-converted batches
  d3rlpy sample+update DiscreteCQL.update(ReplayBuffer.sample_transition_batch(B)): its real step
Ratios are medians over rounds of the per-round ratio ours/d3rlpy, update with update and
sample+update with sample+update.

``--memory-frames N`` also writes a synthetic DQN Replay Dataset checkpoint of N 84×84 frames and
loads it in a fresh process through ``env=atari-replay``'s loader and the FrameSampler, reporting
peak and final RSS against the frames' own bytes (N·7056).

    python scripts/bench_discrete.py --peer-venv /path/to/peer-venv --json docs/bench-discrete-cpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import POOL, Workload, cpu_info, cycle, d3rlpy_device, import_d3rlpy, paired_ratio, run_rounds

from cql_runner.config import CQLConfig, DiscreteConfig, NetworkConfig
from cql_runner.data.types import DatasetMeta, OfflineData
from cql_runner.discrete.agent import DiscreteCQLAgent
from cql_runner.discrete.frames import FrameData, FrameSampler
from cql_runner.discrete.sampler import DiscreteSampler

SCHEMA = "cql-runner-bench-discrete/1"
LR = 6.25e-5  # d3rlpy DiscreteCQL's default learning rate, on both sides
TARGET_EVERY = 8000  # d3rlpy's default target interval, on both sides
SHAPES = {"mlp": {"obs": (4,), "n_actions": 2}, "cnn": {"obs": (4, 84, 84), "n_actions": 6}}


# ----- data -------------------------------------------------------------------------------
def vector_data(size: int, seed: int = 0, episode_len: int = 200) -> OfflineData:
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((size + 1, 4)).astype(np.float32)
    terminals = np.zeros(size, np.float32)
    terminals[episode_len - 1 :: episode_len] = 1.0
    terminals[-1] = 1.0  # the data ends an episode, as d3rlpy's dataset requires
    return OfflineData(
        observations=obs[:-1],
        actions=rng.integers(0, 2, (size, 1)).astype(np.float32),
        rewards=np.ones(size, np.float32),
        next_observations=obs[1:],
        terminals=terminals,
        timeouts=np.zeros(size, np.float32),
        episode_starts=np.arange(0, size, episode_len, dtype=np.int64),
        meta=DatasetMeta(dataset_id="synthetic/cartpole-shapes", extra={"n_actions": 2}),
    )


def frame_data(size: int, seed: int = 0, episode_len: int = 500) -> FrameData:
    rng = np.random.default_rng(seed)
    terminals = np.zeros(size, np.float32)
    terminals[episode_len - 1 :: episode_len] = 1.0
    terminals[-1] = 1.0
    return FrameData(
        frames=rng.integers(0, 256, (size, 84, 84), dtype=np.uint8),
        actions=rng.integers(0, 6, size),
        rewards=rng.choice(np.array([-1.0, 0.0, 1.0], np.float32), size),
        terminals=terminals,
        episode_starts=np.arange(0, size, episode_len, dtype=np.int64),
        stack=4,
        meta=DatasetMeta(dataset_id="synthetic/atari-shapes", extra={"n_actions": 6, "frame_stack": 4}),
    )


# ----- the two sides ----------------------------------------------------------------------
def make_ours(kind: str, args: argparse.Namespace) -> DiscreteCQLAgent:
    shape = SHAPES[kind]
    discrete = DiscreteConfig(
        backbone="double_dqn",
        td_loss="huber",
        n_step=1,
        target_update="hard",
        target_update_every=TARGET_EVERY,
        encoder="nature_cnn" if kind == "cnn" else "mlp",
    )
    return DiscreteCQLAgent(
        int(np.prod(shape["obs"])),
        shape["n_actions"],
        [0],
        NetworkConfig(hidden=list(args.hidden), n_critics=1),
        CQLConfig(alpha=1.0, lagrange=False, critic_lr=LR),
        discrete,
        args.device,
        obs_shape=shape["obs"],
    )


def d3rlpy_dataset(d3rlpy: Any, kind: str, data: OfflineData | FrameData) -> Any:
    """The same transitions as a d3rlpy MDPDataset (frames as stored 4-stacks: d3rlpy's own format)."""
    from d3rlpy.dataset import MDPDataset

    if isinstance(data, FrameData):
        index = np.arange(data.size)[:, None] + np.arange(-3, 1)[None, :]
        starts = np.repeat(data.episode_starts, np.diff(np.append(data.episode_starts, data.size)))
        observations = data.frames[np.maximum(index, starts[:, None])]
        actions = data.actions
    else:
        observations, actions = data.observations, data.actions.astype(np.int64).reshape(-1)
    with contextlib.redirect_stdout(io.StringIO()):
        return MDPDataset(
            observations=observations,
            actions=actions,
            rewards=data.rewards,
            terminals=data.terminals,
            action_space=d3rlpy.ActionSpace.DISCRETE,
            action_size=SHAPES[kind]["n_actions"],
        )


def make_d3rlpy(d3rlpy: Any, kind: str, dataset: Any, args: argparse.Namespace) -> Any:
    from d3rlpy.models.encoders import PixelEncoderFactory, VectorEncoderFactory

    encoder = PixelEncoderFactory() if kind == "cnn" else VectorEncoderFactory(hidden_units=list(args.hidden))
    cfg = d3rlpy.algos.DiscreteCQLConfig(
        batch_size=args.batch,
        gamma=0.99,
        learning_rate=LR,
        n_critics=1,
        target_update_interval=TARGET_EVERY,
        alpha=1.0,
        encoder_factory=encoder,
        observation_scaler=d3rlpy.preprocessing.PixelObservationScaler() if kind == "cnn" else None,
    )
    algo = cfg.create(device=d3rlpy_device(torch.device(args.device)))
    algo.build_with_dataset(dataset)
    return algo


def rows_for(kind: str, args: argparse.Namespace, d3rlpy: Any | None, log: Any) -> list[Workload]:
    size = args.frames if kind == "cnn" else args.transitions
    data: OfflineData | FrameData = frame_data(size) if kind == "cnn" else vector_data(size)

    def sampler() -> DiscreteSampler | FrameSampler:
        if isinstance(data, FrameData):
            return FrameSampler(data, [0], args.device, discount=0.99, n_step=1)
        return DiscreteSampler(data, [0], args.device, discount=0.99, n_step=1)

    agent, pool_sampler = make_ours(kind, args), sampler()
    next_batch = cycle([pool_sampler.sample(args.batch) for _ in range(POOL)])
    agent_s, sampler_s = make_ours(kind, args), sampler()
    rows = [
        Workload(f"ours_{kind}", f"ours {kind} update", lambda: agent.update(next_batch())),
        Workload(
            f"ours_{kind}_sampled", f"ours {kind} sample+update", lambda: agent_s.update(sampler_s.sample(args.batch))
        ),
    ]
    if d3rlpy is not None:
        from d3rlpy.torch_utility import TorchMiniBatch

        log(f"  building d3rlpy's DiscreteCQL ({kind})")
        dataset = d3rlpy_dataset(d3rlpy, kind, data)
        algo, algo_s = make_d3rlpy(d3rlpy, kind, dataset, args), make_d3rlpy(d3rlpy, kind, dataset, args)
        impl = algo._impl
        next_peer = cycle(
            [
                TorchMiniBatch.from_batch(
                    dataset.sample_transition_batch(args.batch),
                    gamma=0.99,
                    compute_returns_to_go=False,
                    device=algo._device,
                    observation_scaler=algo._config.observation_scaler,
                )
                for _ in range(POOL)
            ]
        )
        rows += [
            Workload(f"d3rlpy_{kind}", f"d3rlpy {kind} update", lambda: impl.update(next_peer(), 0), group="peer"),
            Workload(
                f"d3rlpy_{kind}_sampled",
                f"d3rlpy {kind} sample+update",
                lambda: algo_s.update(dataset.sample_transition_batch(args.batch)),
                group="peer",
            ),
        ]
    return rows


# ----- memory of a frame load, in a fresh process ------------------------------------------
def write_replay(folder: Path, frames: int, seed: int = 0) -> None:
    """One DQN-replay checkpoint of ``frames`` rows (flat 8×8-pixel blocks, so gzip stays quick)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    blocks = rng.integers(0, 256, (frames, 11, 11), dtype=np.uint8)
    arrays = {
        "observation": np.repeat(np.repeat(blocks, 8, axis=1), 8, axis=2)[:, :84, :84],
        "action": rng.integers(0, 6, frames).astype(np.int32),
        "reward": rng.choice(np.array([-1.0, 0.0, 1.0], np.float32), frames),
        "terminal": (rng.random(frames) < 1e-3).astype(np.uint8),
    }
    for name, array in arrays.items():
        with gzip.open(folder / f"$store$_{name}_ckpt.0.gz", "wb", compresslevel=1) as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)


def rss_mb() -> dict[str, float]:
    status = Path("/proc/self/status").read_text().splitlines()
    values = {line.split(":")[0]: float(line.split()[1]) / 1024 for line in status if line.startswith("Vm")}
    return {"rss_mb": values["VmRSS"], "peak_rss_mb": values["VmHWM"]}


def memory_child(folder: Path) -> dict[str, Any]:
    from cql_runner.discrete.dqn_replay import DQNReplaySource

    before = rss_mb()
    data = DQNReplaySource(path=folder).load()
    loaded = rss_mb()
    sampler = FrameSampler(data, [0], "cpu", discount=0.99, n_step=3)
    sampler.sample(32)
    after = rss_mb()
    return {
        "frames": data.size,
        "frame_bytes_mb": data.frames.nbytes / 2**20,
        "sampler_bytes_mb": sampler.nbytes() / 2**20,
        "frames_stay_uint8": sampler.frames.dtype == torch.uint8,
        "rss_before_load_mb": before["rss_mb"],
        "rss_after_load_mb": loaded["rss_mb"],
        "rss_with_sampler_mb": after["rss_mb"],
        "peak_rss_mb": after["peak_rss_mb"],
    }


def measure_memory(frames: int, log: Any) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "replay_logs"
        log(f"  writing a {frames}-frame replay checkpoint")
        write_replay(folder, frames)
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(folder)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    per_frame = (result["rss_with_sampler_mb"] - result["rss_before_load_mb"]) * 2**20 / result["frames"]
    result["resident_bytes_per_frame"] = per_frame
    result["projected_1m_frames_gb"] = per_frame * 1e6 / 2**30
    return result


# ----- the run ------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workloads", nargs="+", choices=sorted(SHAPES), default=["mlp", "cnn"])
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256], help="MLP hidden sizes (both sides)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=50, help="MLP steps per row per round")
    p.add_argument("--cnn-steps", type=int, default=5, help="CNN steps per row per round")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--transitions", type=int, default=100_000, help="synthetic vector transitions")
    p.add_argument("--frames", type=int, default=5_000, help="synthetic frames for the CNN rows")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-peer", action="store_true")
    p.add_argument("--peer-venv", type=Path, default=None, help="the venv holding d3rlpy (cql_runner.peers build)")
    p.add_argument("--memory-frames", type=int, default=0, help="also measure the RSS of a replay load of N frames")
    p.add_argument("--memory-child", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--markdown", type=Path, default=None, help="write the table here too")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.memory_child is not None:
        print(json.dumps(memory_child(args.memory_child)))
        return {}
    log = (lambda _msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    machine = {
        **cpu_info(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "device": str(device),
    }
    notes: list[str] = []
    peer_info: dict[str, Any] = {"name": "d3rlpy", "version": None, "available": False, "reason": None}
    d3rlpy = None
    if args.no_peer:
        peer_info["reason"] = "skipped (--no-peer)"
    else:
        d3rlpy, peer_info["reason"] = import_d3rlpy(args.peer_venv)
        if d3rlpy is not None:
            peer_info.update(version=d3rlpy.__version__, available=True)
        else:
            notes.append(f"peer missing: {peer_info['reason']}")

    by_kind: dict[str, list[Workload]] = {}
    for kind in args.workloads:
        log(f"building the {kind} rows (batch {args.batch}, {device})")
        by_kind[kind] = rows_for(kind, args, d3rlpy, log)
        for w in by_kind[kind]:
            w.steps = args.cnn_steps if kind == "cnn" else args.steps
    rows = [w for kind in args.workloads for w in by_kind[kind]]
    machine["loadavg_before"] = list(os.getloadavg())
    run_rounds(rows, args, device, log)
    machine["loadavg_after"] = list(os.getloadavg())

    named = {w.name: w for w in rows}
    results, ratios = [], {}
    for w in rows:
        peer = named.get(w.name.replace("ours_", "d3rlpy_")) if w.group == "ours" else None
        results.append(
            {
                "name": w.name,
                "label": w.label,
                "group": w.group,
                "steps_per_s": {"median": statistics.median(w.rates), "min": min(w.rates), "max": max(w.rates)},
                "per_round": w.rates,
                "steps_per_round": w.steps,
                "ratio_vs_d3rlpy": paired_ratio(w, peer),
            }
        )
        if w.group == "ours":
            ratios[w.name.removeprefix("ours_")] = paired_ratio(w, peer)
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "config": {
            "batch": args.batch,
            "mlp": {"obs": [4], "n_actions": 2, "hidden": list(args.hidden), "transitions": args.transitions},
            "cnn": {
                "obs": [4, 84, 84],
                "dtype": "uint8",
                "n_actions": 6,
                "encoder": "Nature DQN",
                "frames": args.frames,
            },
            "algorithm": "Double DQN + CQL, alpha 1, Huber TD, 1 Q-network, Adam lr 6.25e-5, hard target every 8000",
            "rounds": args.rounds,
            "steps": {"mlp": args.steps, "cnn": args.cnn_steps},
            "warmup": args.warmup,
            "device": str(device),
        },
        "machine": machine,
        "peer": peer_info,
        "rows": results,
        "ratios": ratios,
        "method": (
            "interleaved rounds (order rotated each round); steps/s median (min-max) over rounds; "
            "ratios are the median over rounds of per-round ratios ours/d3rlpy"
        ),
        "notes": notes,
        "command": "python scripts/bench_discrete.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    if args.memory_frames:
        report["memory"] = measure_memory(args.memory_frames, log)
    table = format_table(report)
    print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown(report, table))
    return report


def markdown(report: dict[str, Any], table: str) -> str:
    return (
        "# Discrete CQL update: cql-runner against d3rlpy 2.8.1 DiscreteCQL\n\n"
        f"Written by `{report['command']}` (schema {report['schema']}; numbers in the JSON next to this file).\n"
        "Both sides run in one process on the same CPU, timed in interleaved rounds; ratios are medians of "
        "per-round ratios.\n\n```\n" + table + "\n```\n"
    )


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else f"{x:{spec}}"


def format_table(report: dict[str, Any]) -> str:
    c, m = report["config"], report["machine"]
    lines = [
        f"Discrete CQL update, batch {c['batch']}: mlp obs 4 / 2 actions / hidden {c['mlp']['hidden']}, "
        f"cnn 4x84x84 uint8 / 6 actions / Nature CNN; {c['device']} ({m['model']}, {m['cores']} cores, "
        f"{m['threads']} threads), torch {m['torch']}, peer d3rlpy {report['peer']['version'] or 'missing'}",
        f"{c['rounds']} interleaved rounds x {c['steps']['mlp']} (mlp) / {c['steps']['cnn']} (cnn) steps; "
        f"load avg {m['loadavg_before'][0]:.1f} -> {m['loadavg_after'][0]:.1f}",
        "",
        f"{'row':<30} {'steps/s median (min-max)':>28} {'x d3rlpy':>9}",
        "-" * 69,
    ]
    for r in report["rows"]:
        s = r["steps_per_s"]
        rng = f"{s['median']:.1f} ({s['min']:.1f}-{s['max']:.1f})"
        lines.append(f"{r['label']:<30} {rng:>28} {_fmt(r['ratio_vs_d3rlpy']):>9}")
    lines.append("-" * 69)
    lines.append("ratios ours/d3rlpy: " + ", ".join(f"{k} {_fmt(v)}" for k, v in report["ratios"].items()))
    mem = report.get("memory")
    if mem:
        lines.append(
            f"replay load of {mem['frames']} frames: frames {mem['frame_bytes_mb']:.0f} MB uint8, sampler "
            f"{mem['sampler_bytes_mb']:.0f} MB; RSS {mem['rss_before_load_mb']:.0f} -> "
            f"{mem['rss_with_sampler_mb']:.0f} MB "
            f"(peak {mem['peak_rss_mb']:.0f} MB), {mem['resident_bytes_per_frame']:.0f} B/frame resident -> "
            f"{mem['projected_1m_frames_gb']:.2f} GB per 1M frames"
        )
    lines += [f"note: {n}" for n in report["notes"]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
