"""The peer-run plumbing without d3rlpy: venv commands, the data export, the job, the evaluation.

The peer script itself runs in a venv with d3rlpy; here its evaluation is checked against our
Evaluator with the same deterministic policy (same env, reset seeds, action mapping and score),
and a slow test runs the real peer when CQL_RUNNER_PEER_VENV names a built peer venv.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_DATASET, TINY_OVERRIDES

from cql_runner.data.types import DatasetMeta, OfflineData
from cql_runner.peers import venv as peer_venv
from cql_runner.peers.job import PeerBudget, episode_arrays, export_npz, make_job, peer_command, seed_dirs
from cql_runner.report.collect_runs import collect
from cql_runner.rollout import env_seeds
from cql_runner.run import load_data


def _load_peer_script():
    spec = importlib.util.spec_from_file_location("d3rlpy_train", Path(peer_venv.__file__).with_name("d3rlpy_train.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _peers_cli(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -m cql_runner.peers ARGS`` in a subprocess with one torch thread, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "cql_runner.peers", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )


def test_constraints_pin_our_public_versions() -> None:
    text = peer_venv.constraints({"torch": "2.13.0+cpu", "mujoco": "4.0.0", "numpy": "2.4.6", "other": "1"})
    assert text.splitlines() == ["torch==2.13.0", "mujoco==4.0.0", "numpy==2.4.6"]


def test_build_commands_install_into_the_peer_venv_only(tmp_path: Path) -> None:
    venv = peer_venv.PeerVenv(tmp_path / "peer")
    create, install = peer_venv.build_commands(venv, tmp_path / "c.txt", "/usr/bin/python3")
    assert create == ["/usr/bin/python3", "-m", "venv", str(tmp_path / "peer")]
    # pip is the peer venv's own, under our constraint file: nothing reaches our interpreter.
    assert install[0] == str(tmp_path / "peer" / "bin" / "python") != sys.executable
    assert install[install.index("-c") + 1] == str(tmp_path / "c.txt")
    assert "d3rlpy==2.8.1" in install and "gymnasium[mujoco]==1.0.0" in install
    assert not venv.is_built()


def test_build_failure_is_one_line_and_reusable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peer_venv, "base_interpreter", lambda: str(tmp_path / "no-such-python"))
    venv = peer_venv.PeerVenv(tmp_path / "peer")
    with pytest.raises(peer_venv.PeerVenvError, match="rerun"):
        peer_venv.build(venv, log=tmp_path / "peer.log")
    assert not venv.is_built()


def _flat_data() -> OfflineData:
    # Three episodes: terminated, truncated, and one the data ends without either flag.
    n = 7
    terminals = np.array([0, 1, 0, 0, 0, 0, 0], np.float32)
    timeouts = np.array([0, 0, 0, 0, 1, 0, 0], np.float32)  # rows 2-4 end truncated
    starts = np.array([0, 2, 5])
    return OfflineData(
        observations=np.arange(n * 2, dtype=np.float32).reshape(n, 2),
        actions=np.linspace(-1, 1, n, dtype=np.float32)[:, None],
        rewards=np.arange(n, dtype=np.float32),
        next_observations=np.zeros((n, 2), np.float32),
        terminals=terminals,
        timeouts=timeouts,
        episode_starts=starts,
        meta=DatasetMeta(dataset_id="x"),
    )


def test_episode_arrays_split_where_our_episodes_end() -> None:
    data = _flat_data()
    arrays = episode_arrays(data)
    np.testing.assert_array_equal(arrays["terminals"], [0, 1, 0, 0, 0, 0, 0])
    # The open last episode is closed as a timeout so d3rlpy does not glue it to anything.
    np.testing.assert_array_equal(arrays["timeouts"], [0, 0, 0, 0, 1, 0, 1])
    ends = np.flatnonzero(arrays["terminals"] + arrays["timeouts"])
    np.testing.assert_array_equal(ends, np.append(data.episode_starts[1:], data.size) - 1)
    for key in ("observations", "actions", "rewards"):
        np.testing.assert_array_equal(arrays[key], getattr(data, key))
    assert data.timeouts[6] == 0  # our data is not modified


def test_job_matches_our_run(minari_root: Path, compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg([*TINY_OVERRIDES, "eval.seed_offset=7"])
    data = load_data(cfg)
    budget = PeerBudget(seeds=(0, 3), steps=40, eval_every=20, eval_episodes=2, hidden=(8, 8))
    path = export_npz(data, tmp_path / "data.npz")
    job = make_job(cfg, data, "cql", budget, tmp_path / "run", path)
    # Normalisation, env and env seeds are exactly what our Evaluator uses.
    assert (job["ref_min_score"], job["ref_max_score"]) == (-1500.0, -150.0)
    assert job["eval_env_id"] == "Pendulum-v1" and job["dataset_id"] == TINY_DATASET
    assert job["eval_env_seeds"] == {"0": env_seeds([0], 2, 7), "3": env_seeds([3], 2, 7)}
    assert job["action_low"] == [-2.0] and job["action_high"] == [2.0]
    assert job["seed_dirs"] == [str(d) for d in seed_dirs(tmp_path / "run", (0, 3))]
    assert job["run_config"]["method"] == "d3rlpy-cql"
    with np.load(path) as z:
        np.testing.assert_array_equal(z["observations"], data.observations)
        np.testing.assert_array_equal(z["actions"], data.actions)
    json.dumps(job)  # plain JSON only
    assert peer_command(Path("/p/bin/python"), Path("/j.json"))[1].endswith("d3rlpy_train.py")


class _ConstantPolicy:
    """What d3rlpy's ``predict`` is to the peer script: observations (1, d) -> actions (1, A)."""

    def __init__(self, value: float) -> None:
        self.value = value

    def predict(self, obs: np.ndarray) -> np.ndarray:
        return np.full((obs.shape[0], 1), self.value, np.float32)


def test_peer_evaluation_equals_our_evaluator(minari_root: Path, compose_cfg, tmp_path: Path) -> None:
    from cql_runner.evaluation import Evaluator

    cfg = compose_cfg([*TINY_OVERRIDES, "eval.episodes=2", "eval.max_episode_steps=30"])
    data = load_data(cfg)
    job = make_job(
        cfg,
        data,
        "cql",
        PeerBudget(seeds=(1,), steps=1, eval_every=1, eval_episodes=2),
        tmp_path / "run",
        tmp_path / "d.npz",
    )
    peer = _load_peer_script().evaluate(_ConstantPolicy(0.5), job, 1)
    with Evaluator(cfg.eval, data.meta, cfg.env) as ev:
        ours = ev.evaluate(lambda obs: np.full((*obs.shape[:2], 1), 0.5, np.float32), [1])[0]
    for key in ("eval/return", "eval/length", "eval/normalized_score", "eval/episodes"):
        assert peer[key] == pytest.approx(ours[key], rel=1e-6), key


def test_peer_run_dirs_are_read_by_our_reports(tmp_path: Path) -> None:
    """What the peer script writes (config.yaml as JSON, metrics.jsonl, summary.json) is a run dir."""
    job = {
        "run_config": {"env": {"name": "hopper-medium"}, "method": "d3rlpy-cql"},
        "peer": {},
        "dataset_id": "d",
        "steps": 10,
        "eval_every": 10,
    }
    script = _load_peer_script()
    run = object.__new__(script.SeedRun)
    run.job, run.seed, run.steps, run.done_steps, run.elapsed = job, 0, 10, 10, 2.0
    run.dir = tmp_path / "seed0"
    run.dir.mkdir()
    (run.dir / "config.yaml").write_text(json.dumps(job["run_config"] | {"seed": 0}))
    run.rows = [{"step": 10, "eval/normalized_score": 12.5, "eval/return": 400.0}]
    (run.dir / "metrics.jsonl").write_text(json.dumps(run.rows[0]) + "\n")
    run.summary_path, run.model_path = run.dir / "summary.json", run.dir / "model.d3"
    run.wall0 = 0.0
    run.finish()
    [r] = collect([tmp_path]).runs
    assert (r.task, r.status, r.config["method"], r.summary["final_normalized_score"]) == (
        "hopper-medium",
        "completed",
        "d3rlpy-cql",
        12.5,
    )


@pytest.mark.slow
def test_real_peer_trains_and_writes_a_run(minari_root: Path, tmp_path: Path) -> None:
    """Runs d3rlpy for a few steps in the peer venv named by CQL_RUNNER_PEER_VENV (skipped without)."""
    venv = os.environ.get("CQL_RUNNER_PEER_VENV")
    if not venv or not (Path(venv) / "bin" / "python").is_file():
        pytest.skip("set CQL_RUNNER_PEER_VENV to a peer venv built by `python -m cql_runner.peers build`")
    run_dir = tmp_path / "peer"
    done = _peers_cli(
        [
            "run",
            "--algo",
            "cql",
            "--venv",
            venv,
            "--run-dir",
            str(run_dir),
            "--seeds",
            "0",
            "--steps",
            "20",
            "--eval-every",
            "10",
            "--eval-episodes",
            "1",
            "--hidden",
            "8",
            "8",
            "--batch-size",
            "16",
            "--n-actions",
            "2",
            "--",
            *TINY_OVERRIDES,
        ],
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 20 and summary["peer"]["method"] == "d3rlpy-cql"
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20] and all("alpha_prime" in r for r in rows)


# ----- the evidence suite's peer methods ----------------------------------------------------------
def test_suite_peer_methods_share_the_plans_budget(tmp_path: Path) -> None:
    from cql_runner.evidence.run_suite import parse_args, plan_from_args
    from cql_runner.evidence.suite_plan import env_args, make_plan, peer_args, train_args

    plan = make_plan("default", methods=["cql-lagrange", "d3rlpy-cql", "d3rlpy-bc"], datasets=["hopper-medium"])
    ours, cql, bc = plan.methods
    assert (ours.peer, cql.peer, bc.peer) == (None, "cql", "bc")
    assert [m.name for m in make_plan("default").methods] == ["cql-lagrange", "cql-fixed", "sac", "bc"]
    ds = plan.datasets[0]
    args = peer_args(plan, ds, cql, tmp_path / "run", tmp_path / "venv")
    train = train_args(plan, ds, ours, tmp_path / "run")

    def after(flag: str, n: int = 1) -> list[str]:
        i = args.index(flag)
        return args[i + 1 : i + 1 + n]

    assert after("--algo") == ["cql"] and after("--venv") == [str(tmp_path / "venv")]
    assert after("--seeds", 3) == [str(s) for s in plan.seeds] and f"seeds=[{','.join(after('--seeds', 3))}]" in train
    assert f"train.steps={after('--steps')[0]}" in train and f"eval.every={after('--eval-every')[0]}" in train
    assert f"eval.episodes={after('--eval-episodes')[0]}" in train
    assert f"network.hidden=[{','.join(after('--hidden', 2))}]" in train
    assert f"train.batch_size={after('--batch-size')[0]}" in train
    assert f"cql.n_actions={after('--n-actions')[0]}" in train
    assert args[args.index("--") + 1 :] == env_args(ds)  # the dataset is read as cql-train reads it
    with pytest.raises(ValueError, match="not a peer"):
        peer_args(plan, ds, ours, tmp_path, tmp_path)
    parsed = parse_args([str(tmp_path), "--methods", "d3rlpy-bc", "--peer-venv", str(tmp_path / "v")])
    assert parsed.peer_venv == tmp_path / "v" and [m.name for m in plan_from_args(parsed).methods] == ["d3rlpy-bc"]


@pytest.mark.slow
def test_tiny_suite_runs_a_peer_into_the_results_table(tmp_path: Path) -> None:
    """cql-evidence with --methods bc,d3rlpy-bc on the tiny plan (skipped without CQL_RUNNER_PEER_VENV)."""
    from conftest import run_cli

    venv = os.environ.get("CQL_RUNNER_PEER_VENV")
    if not venv or not (Path(venv) / "bin" / "python").is_file():
        pytest.skip("set CQL_RUNNER_PEER_VENV to a peer venv built by `python -m cql_runner.peers build`")
    out, docs = tmp_path / "suite", tmp_path / "docs"
    done = run_cli(
        ["run", str(out), "--budget", "tiny", "--docs", str(docs), "--methods", "bc,d3rlpy-bc", "--peer-venv", venv],
        cwd=tmp_path,
        timeout=900,
        script="cql-evidence",
        env={"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((docs / "evidence" / "results.json").read_text())
    assert {k.split("/")[1] for k in results} == {"bc", "d3rlpy-bc"}
    assert "d3rlpy-bc" in (docs / "RESULTS.md").read_text()


def test_a_missing_dataset_is_one_line_and_builds_no_venv(minari_root: Path, tmp_path: Path) -> None:
    done = _peers_cli(
        [
            "run",
            "--algo",
            "bc",
            "--venv",
            str(tmp_path / "venv"),
            "--run-dir",
            str(tmp_path / "run"),
            "--steps",
            "10",
            "--eval-every",
            "10",
            "--",
            *TINY_OVERRIDES[:-2],
            "dataset.id=test/none/missing-v0",
            "logger=none",
        ],
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("cql_runner.peers: error:") and "missing-v0" in line
    assert not (tmp_path / "venv").exists()


def test_discrete_actions_are_refused_before_the_peer_runs() -> None:
    from cql_runner.config import ConfigError
    from cql_runner.peers.__main__ import peer_data

    data = _flat_data()
    assert peer_data(data) is data
    data.meta.extra["n_actions"] = 3
    with pytest.raises(ConfigError, match="has discrete actions"):
        peer_data(data)


def test_image_frames_are_one_line_and_build_no_venv(tmp_path: Path) -> None:
    from data_helpers import write_dqn_replay

    write_dqn_replay(tmp_path / "replay" / "Pong" / "1" / "replay_logs", checkpoints=1, rows=20)
    done = _peers_cli(
        [
            "run",
            "--algo",
            "cql",
            "--venv",
            str(tmp_path / "venv"),
            "--run-dir",
            str(tmp_path / "run"),
            "--steps",
            "10",
            "--eval-every",
            "10",
            "--",
            "env=atari-replay",
            f"dataset.path={tmp_path / 'replay'}",
            "game=Pong",
            "dataset.fraction=1.0",
            "logger=none",
        ],
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("cql_runner.peers: error:") and "image frames" in line and "dqn-replay/Pong/1" in line
    assert not (tmp_path / "venv").exists() and not (tmp_path / "run").exists()
