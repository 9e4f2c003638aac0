"""Train d3rlpy's CQL or BC on an exported dataset and write a cql-runner run dir per seed.

This file runs INSIDE the peer venv (d3rlpy 2.8.1, gymnasium 1.0.0, our torch): it imports
nothing from cql_runner, only d3rlpy, gymnasium, numpy and the standard library. Everything it
needs (data file, seeds, budget, evaluation env and env seeds, reference returns) comes in one
job JSON written by ``cql_runner.peers.job``, so the two sides agree by construction.

Usage: <peer-python> d3rlpy_train.py JOB.json
Per seed it writes <seed_dir>/config.yaml, metrics.jsonl and summary.json in the layout our
reports read. A seed whose summary.json already shows the full step count is skipped; an
unfinished one continues from its last saved model (networks and optimizers, saved at every
evaluation; the sampling RNG restarts from the seed, so a resumed seed is not bit-identical to an
uninterrupted one).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def load_job(path: str) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def make_dataset(d3rlpy: Any, npz_path: str) -> Any:
    z = np.load(npz_path)
    return d3rlpy.dataset.MDPDataset(
        observations=z["observations"].astype(np.float32),
        actions=z["actions"].astype(np.float32),
        rewards=z["rewards"].astype(np.float32),
        terminals=z["terminals"].astype(np.float32),
        timeouts=z["timeouts"].astype(np.float32),
    )


def make_algo(d3rlpy: Any, job: dict[str, Any]) -> Any:
    hidden = list(job["hidden"])
    enc = d3rlpy.models.encoders.VectorEncoderFactory(hidden_units=hidden)
    params = dict(job.get("algo_params", {}))
    if job["algo"] == "cql":
        config = d3rlpy.algos.CQLConfig(
            actor_encoder_factory=enc,
            critic_encoder_factory=enc,
            batch_size=int(job["batch_size"]),
            n_action_samples=int(job["n_actions"]),
            **params,
        )
    elif job["algo"] == "bc":
        config = d3rlpy.algos.BCConfig(encoder_factory=enc, batch_size=int(job["batch_size"]), **params)
    else:
        raise SystemExit(f"unknown algo {job['algo']!r}; choose cql or bc")
    return config.create(device="cpu:0")


def evaluate(algo: Any, job: dict[str, Any], seed: int) -> dict[str, float]:
    """Deterministic rollouts with the same env, reset seeds and step limit as our Evaluator."""
    import gymnasium as gym

    kwargs: dict[str, Any] = (
        {} if job["max_episode_steps"] is None else {"max_episode_steps": int(job["max_episode_steps"])}
    )
    env = gym.make(job["eval_env_id"], **kwargs)
    low, high = np.asarray(job["action_low"], np.float64), np.asarray(job["action_high"], np.float64)
    returns, lengths = [], []
    try:
        for env_seed in job["eval_env_seeds"][str(seed)]:
            obs, _ = env.reset(seed=int(env_seed))
            total, steps, done = 0.0, 0, False
            while not done:
                unit = algo.predict(np.asarray(obs, np.float32)[None])[0]
                # The policy acts in [-1, 1]; the env's Box bounds are restored as our rollout does.
                a = np.clip(low + (np.asarray(unit, np.float64) + 1.0) * 0.5 * (high - low), low, high)
                a = a.astype(np.float32)
                obs, r, term, trunc, _ = env.step(a)
                total, steps, done = total + float(r), steps + 1, bool(term or trunc)
            returns.append(total)
            lengths.append(steps)
    finally:
        env.close()
    mean = float(np.mean(returns))
    lo, hi = job["ref_min_score"], job["ref_max_score"]
    score = math.nan if lo is None or hi is None else 100.0 * (mean - lo) / (hi - lo)
    return {
        "eval/return": mean,
        "eval/return_std": float(np.std(returns)),
        "eval/length": float(np.mean(lengths)),
        "eval/normalized_score": score,
        "eval/episodes": float(len(returns)),
    }


def _finite(x: Any) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


class SeedRun:
    """One seed's algorithm and its run dir; trained one evaluation interval at a time."""

    def __init__(self, d3rlpy: Any, job: dict[str, Any], dataset: Any, seed: int, seed_dir: Path) -> None:
        import torch

        self.d3rlpy, self.job, self.dataset, self.seed, self.dir = d3rlpy, job, dataset, seed, seed_dir
        self.steps = int(job["steps"])
        self.summary_path = seed_dir / "summary.json"
        self.metrics_path = seed_dir / "metrics.jsonl"
        self.progress_path, self.model_path = seed_dir / "progress.json", seed_dir / "model.d3"
        self.done_steps, self.elapsed = 0, 0.0
        self.finished = (
            self.summary_path.is_file() and json.loads(self.summary_path.read_text()).get("steps") == self.steps
        )
        self.wall0 = time.perf_counter()
        if self.finished:
            print(f"seed {seed}: done, skipped", flush=True)
            return
        seed_dir.mkdir(parents=True, exist_ok=True)
        (seed_dir / "config.yaml").write_text(json.dumps(job["run_config"] | {"seed": seed}, indent=2) + "\n")
        d3rlpy.seed(seed)
        torch.manual_seed(seed)
        self.algo = make_algo(d3rlpy, job)
        self.algo.build_with_dataset(dataset)
        if self.progress_path.is_file() and self.model_path.is_file():
            progress = json.loads(self.progress_path.read_text())
            self.done_steps, self.elapsed = int(progress["step"]), float(progress["train_time_s"])
            self.wall0 -= float(progress.get("wall_time_s", 0.0))
            self.algo.load_model(str(self.model_path))
            print(f"seed {seed}: resuming at step {self.done_steps}", flush=True)
        # Keep only the metrics rows of steps already saved (a crash may have left later ones).
        text = self.metrics_path.read_text() if self.metrics_path.is_file() else ""
        self.rows = [r for r in (json.loads(x) for x in text.splitlines()) if r["step"] <= self.done_steps]
        self.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in self.rows))

    def train_chunk(self) -> None:
        """Train up to the next evaluation step, evaluate, log, and save (model, progress)."""
        chunk = min(int(self.job["eval_every"]), self.steps - self.done_steps)
        t0 = time.perf_counter()
        losses: dict[str, float] = {}
        for _, m in self.algo.fitter(
            self.dataset,
            n_steps=chunk,
            n_steps_per_epoch=chunk,
            save_interval=10**9,
            experiment_name=f"peer-seed{self.seed}",
            with_timestamp=False,
            logger_adapter=self.d3rlpy.logging.NoopAdapterFactory(),
            show_progress=False,
        ):
            losses = {str(k): float(v) for k, v in m.items()}
        self.elapsed += time.perf_counter() - t0
        self.done_steps += chunk
        row: dict[str, Any] = {"step": self.done_steps, "train_time_s": round(self.elapsed, 3)}
        row |= {f"peer/{k}": v for k, v in losses.items()}
        # d3rlpy logs the Lagrange multiplier as "alpha" and the entropy temperature as "temp", each the mean
        # over the interval just trained (ours log the value at the step).
        if "alpha" in losses:
            row["alpha_prime"] = losses["alpha"]
        if "temp" in losses:
            row["alpha"] = losses["temp"]
        row |= evaluate(self.algo, self.job, self.seed)
        self.rows.append(row)
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        self.algo.save_model(str(self.model_path))
        self.progress_path.write_text(
            json.dumps(
                {"step": self.done_steps, "train_time_s": self.elapsed, "wall_time_s": time.perf_counter() - self.wall0}
            )
        )
        print(
            f"seed {self.seed} step {self.done_steps}: score {row['eval/normalized_score']:.1f} "
            f"({self.elapsed:.0f} s of training)",
            flush=True,
        )
        if self.done_steps >= self.steps:
            self.finish()

    def finish(self) -> None:
        scores = [_finite(r.get("eval/normalized_score")) for r in self.rows if "eval/normalized_score" in r]
        scored = [s for s in scores if s is not None]
        last = self.rows[-1] if self.rows else {}
        summary = {
            "status": "completed",
            "error": None,
            "env": self.job["run_config"]["env"]["name"],
            "dataset_id": self.job["dataset_id"],
            "seed": self.seed,
            "steps": self.done_steps,
            "final_normalized_score": _finite(last.get("eval/normalized_score")),
            "best_normalized_score": max(scored) if scored else None,
            "final_return": _finite(last.get("eval/return")),
            "wall_time_s": round(time.perf_counter() - self.wall0, 3),
            "train_time_s": round(self.elapsed, 3),
            "steps_per_s": round(self.done_steps / self.elapsed, 2) if self.elapsed > 0 else None,
            "peer": self.job["peer"],
        }
        self.summary_path.write_text(json.dumps(summary, indent=2) + "\n")
        self.model_path.unlink(missing_ok=True)
        self.finished = True


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: d3rlpy_train.py JOB.json", file=sys.stderr)
        return 2
    job = load_job(argv[0])
    import d3rlpy
    import torch

    torch.set_num_threads(int(job.get("threads", 1)))
    dataset = make_dataset(d3rlpy, job["data"])
    runs = [SeedRun(d3rlpy, job, dataset, int(s), Path(d)) for s, d in zip(job["seeds"], job["seed_dirs"])]
    # Seeds advance together, one evaluation interval each in turn, as our seed-vectorised runs do:
    # a cell stopped early still has every seed at the same step.
    while not all(r.finished for r in runs):
        for r in runs:
            if not r.finished:
                r.train_chunk()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
