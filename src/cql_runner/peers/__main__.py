"""``python -m cql_runner.peers``: build the peer venv, or train a peer on one of our datasets.

    python -m cql_runner.peers build --venv DIR
    python -m cql_runner.peers run --algo cql|bc --venv DIR --run-dir DIR --seeds 0 1 2 --steps 20000 \
        --eval-every 5000 --eval-episodes 10 [--param conservative_weight=10] -- env=hopper-medium ...

Everything after ``--`` is read as ``cql-train`` overrides: the dataset, env and evaluation settings
are composed exactly as a ``cql-train`` run with them would be, so both sides share one definition.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig

from cql_runner.data.types import OfflineData
from cql_runner.discrete.frames import FrameData
from cql_runner.peers import venv as peer_venv
from cql_runner.peers.job import PEER_METHODS, PeerBudget, export_npz, make_job, peer_command, write_job


def compose_train_config(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_module

    from cql_runner.config import register_configs

    register_configs()
    with initialize_config_module("cql_runner.conf", version_base="1.3"):
        return compose("train", overrides=overrides)


def parse_param(text: str) -> tuple[str, object]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--param wants key=value (got {text!r})")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cql_runner.peers", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build (or reuse) the peer venv")
    b.add_argument("--venv", type=Path, required=True)
    r = sub.add_parser("run", help="train a peer on a dataset named by cql-train overrides")
    r.add_argument("--algo", choices=sorted(PEER_METHODS), required=True)
    r.add_argument("--venv", type=Path, required=True)
    r.add_argument("--run-dir", type=Path, required=True)
    r.add_argument("--seeds", type=int, nargs="+", default=[0])
    r.add_argument("--steps", type=int, required=True)
    r.add_argument("--eval-every", type=int, required=True)
    r.add_argument("--eval-episodes", type=int, default=10)
    r.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    r.add_argument("--batch-size", type=int, default=256)
    r.add_argument("--n-actions", type=int, default=10)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument(
        "--param",
        type=parse_param,
        action="append",
        default=[],
        help="a d3rlpy config field, key=value (JSON value); repeatable",
    )
    r.add_argument("overrides", nargs="*", help="cql-train overrides naming the dataset and env (after --)")
    return p


def peer_data(data: OfflineData | FrameData) -> OfflineData:
    """The data if the peers can train on it: d3rlpy's continuous CQL and BC read flat transitions with
    Box actions, so image frames and discrete actions are refused in one line."""
    from cql_runner.config import ConfigError

    name = data.meta.dataset_id
    if isinstance(data, FrameData):
        raise ConfigError(
            f"dataset {name!r} holds image frames, which the peers cannot read (they train d3rlpy's continuous "
            "CQL/BC on flat transitions); compare on a dataset with vector observations and Box actions"
        )
    if data.meta.extra.get("n_actions") is not None:
        raise ConfigError(
            f"dataset {name!r} has discrete actions; the peers train d3rlpy's continuous CQL/BC, so compare on a "
            "dataset with Box actions"
        )
    return data


def run(args: argparse.Namespace) -> int:
    from cql_runner.config import validate
    from cql_runner.run import load_data

    cfg = compose_train_config(list(args.overrides))
    validate(cfg)
    # Before building the venv: a missing dataset fails in seconds, not minutes.
    data = peer_data(load_data(cfg))
    venv = peer_venv.build(peer_venv.PeerVenv(args.venv), log=args.venv.with_suffix(".log"))
    budget = PeerBudget(
        seeds=tuple(args.seeds),
        steps=args.steps,
        eval_every=args.eval_every,
        eval_episodes=args.eval_episodes,
        hidden=tuple(args.hidden),
        batch_size=args.batch_size,
        n_actions=args.n_actions,
        threads=args.threads,
        algo_params=dict(args.param),
    )
    args.run_dir.mkdir(parents=True, exist_ok=True)
    data_path = export_npz(data, args.run_dir / "peer-data.npz")
    job = make_job(cfg, data, args.algo, budget, args.run_dir, data_path)
    job_path = write_job(job, args.run_dir / "peer-job.json")
    done = subprocess.run(peer_command(venv.python, job_path), check=False)
    data_path.unlink(missing_ok=True)  # the export is cheap to redo and as large as the dataset
    return done.returncode


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "build":
            peer_venv.build(peer_venv.PeerVenv(args.venv), log=args.venv.with_suffix(".log"))
            return 0
        return run(args)
    except peer_venv.PeerVenvError as exc:
        print(f"cql_runner.peers: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bad dataset, env or override: one line naming the fix, as cql-train does
        from cql_runner.cli import USER_ERRORS

        if not isinstance(exc, USER_ERRORS):
            raise
        print(f"cql_runner.peers: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
