"""Online fine-tuning speed against the offline update, at the same network and batch.

Times, in interleaved rounds, (a) the offline training step (DeviceSampler.sample + CQLAgent.update)
and (b) the online phase at ``online.utd=1`` (one env step of Hopper-v5 with a sampled action plus
one update on a mixed batch, half offline, half online), and reports both steps/s and their ratio.
The offline data is synthetic (Hopper's shapes); the online buffer starts with one finished
episode so every timed env step also updates.

    python scripts/bench_online.py --rounds 5 --steps 20 --json docs/bench-online-cpu.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cql_runner.config import CQLConfig, NetworkConfig
from cql_runner.cql.agent import CQLAgent
from cql_runner.data.buffer import DeviceSampler
from cql_runner.data.types import DatasetMeta, OfflineData
from cql_runner.online.phase import OnlinePhase, OnlineSetup

OBS_DIM, ACT_DIM, ENV_ID = 11, 3, "Hopper-v5"


def synthetic_data(n: int) -> OfflineData:
    g = np.random.default_rng(0)
    obs = g.normal(size=(n, OBS_DIM)).astype(np.float32)
    starts = np.arange(0, n, 1000)
    return OfflineData(
        obs,
        g.uniform(-1, 1, (n, ACT_DIM)).astype(np.float32),
        g.normal(size=n).astype(np.float32),
        obs,
        np.zeros(n, np.float32),
        np.zeros(n, np.float32),
        starts,
        DatasetMeta("synthetic"),
    )


class _NoEval:
    def evaluate(self) -> list[dict[str, float]]:
        return [{}]


def build(args: argparse.Namespace) -> tuple[Any, OnlinePhase]:
    data = synthetic_data(args.dataset_size)
    cql = CQLConfig(n_actions=args.n_actions, calibration=True)
    net = NetworkConfig(hidden=list(args.hidden))
    offline_agent = CQLAgent(OBS_DIM, ACT_DIM, [0], net, cql)
    offline = DeviceSampler(data, [0], "cpu", discount=0.99)

    def offline_step() -> None:
        offline_agent.update(offline.sample(args.batch))

    # steps sizes the online buffer here; each round below sets the steps it runs to.
    setup = OnlineSetup(
        steps=100_000,
        utd=1,
        envs=1,
        random_steps=0,
        calibrate=True,
        offline_ratio=0.5,
        batch_size=args.batch,
        log_every=10**9,
        eval_every=0,
        checkpoint_every=0,
        offline_steps=0,
        discount=0.99,
        reward_scale=1.0,
        reward_bias=0.0,
        sparse_reward_neg=None,
        env_id=ENV_ID,
        max_episode_steps=None,
        obs_keys=None,
        obs_mean=None,
        obs_std=None,
        action_low=None,
        action_high=None,
    )
    phase = OnlinePhase(
        setup, CQLAgent(OBS_DIM, ACT_DIM, [0], net, cql), DeviceSampler(data, [0], "cpu", discount=0.99), _NoEval(), []
    )
    # One finished episode in the online buffer, so updates run from the first timed env step.
    rows = 200
    z = data.observations[:rows]
    phase.buffers[0].add_episode(
        phase.buffers[0].start_episode(0),
        z,
        data.actions[:rows],
        data.rewards[:rows],
        z,
        np.zeros(rows),
        np.ones(rows),
        discount=0.99,
        sparse_reward_neg=None,
    )
    return offline_step, phase


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256, 256])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--n-actions", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=20, help="steps of each side per round")
    p.add_argument("--dataset-size", type=int, default=100_000)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    offline_step, phase = build(args)
    for _ in range(3):
        offline_step()
    offline_rates, online_rates = [], []
    for r in range(args.rounds):
        start = time.perf_counter()
        for _ in range(args.steps):
            offline_step()
        offline_rates.append(args.steps / (time.perf_counter() - start))
        # run() continues from the phase's env step; each round adds --steps more (envs are rebuilt:
        # milliseconds for Hopper, counted against the online side).
        phase.setup = dataclasses.replace(phase.setup, steps=phase.env_steps + args.steps)
        start = time.perf_counter()
        phase.run()
        online_rates.append(args.steps / (time.perf_counter() - start))
        print(
            f"round {r + 1}/{args.rounds}: offline {offline_rates[-1]:.2f} updates/s, "
            f"online {online_rates[-1]:.2f} env steps/s (utd 1)",
            file=sys.stderr,
            flush=True,
        )
    ratios = [b / a for a, b in zip(offline_rates, online_rates)]
    report = {
        "config": {
            "hidden": args.hidden,
            "batch": args.batch,
            "n_actions": args.n_actions,
            "env": ENV_ID,
            "offline_ratio": 0.5,
            "utd": 1,
            "threads": torch.get_num_threads(),
        },
        "offline_steps_per_s": statistics.median(offline_rates),
        "online_env_steps_per_s": statistics.median(online_rates),
        "online_over_offline": statistics.median(ratios),
        "per_round": {"offline": offline_rates, "online": online_rates},
        "updates": phase.updates,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "per_round"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
