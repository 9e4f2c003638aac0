"""Offline-to-online fine-tuning: mixed batches, the online buffer, the online phase, its checks."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from data_helpers import make_d4rl_file

from cql_runner.config import (
    ConfigError,
    CQLConfig,
    EvalConfig,
    NetworkConfig,
    OnlineConfig,
    RunConfig,
    TrainConfig,
    validate,
)
from cql_runner.cql.agent import CQLAgent
from cql_runner.data.buffer import DeviceSampler
from cql_runner.data.types import DatasetMeta, OfflineData
from cql_runner.online.checks import check_fine_tuning, offline_ratio
from cql_runner.online.mixed import MixedSampler
from cql_runner.online.phase import OnlinePhase, OnlineSetup, online_setup
from cql_runner.online.replay import OnlineReplay

OBS, ACT = 3, 1  # Pendulum-v1


def _offline(t: int = 40, reward: float = 1.0) -> OfflineData:
    g = np.random.default_rng(0)
    obs = g.normal(size=(t, OBS)).astype(np.float32)
    meta = DatasetMeta(
        "synthetic",
        eval_env_id="Pendulum-v1",
        action_low=np.full(ACT, -2.0, np.float32),
        action_high=np.full(ACT, 2.0, np.float32),
    )
    return OfflineData(
        obs,
        g.uniform(-1, 1, (t, ACT)).astype(np.float32),
        np.full(t, reward, np.float32),
        obs + 0.1,
        np.zeros(t, np.float32),
        np.zeros(t, np.float32),
        np.asarray([0, t // 2]),
        meta,
    )


def _brute_rtg(rewards: np.ndarray, discount: float) -> np.ndarray:
    r = [float(x) for x in rewards]
    return np.asarray([sum(discount ** (j - t) * r[j] for j in range(t, len(r))) for t in range(len(r))])


def _online_buffer(rows: int, reward: float) -> OnlineReplay:
    buf = OnlineReplay(rows, OBS, ACT)
    z = np.zeros((rows, OBS))
    buf.add_episode(
        buf.start_episode(0),
        z,
        np.zeros((rows, ACT)),
        np.full(rows, reward),
        z,
        np.zeros(rows),
        np.ones(rows),
        discount=0.9,
        sparse_reward_neg=None,
    )
    return buf


# ----- mixed batches ------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 0.75, 1.0])
def test_mixed_batches_hold_exactly_the_configured_offline_share(ratio: float) -> None:
    # Offline rows have reward +1, online rows −1: the reward column tells where each came from.
    batch_size, seeds = 10, [0, 1]
    mixed = MixedSampler(
        DeviceSampler(_offline(), seeds, "cpu", discount=0.9),
        [_online_buffer(7, -1.0), _online_buffer(5, -1.0)],
        seeds,
        batch_size,
        ratio,
        "cpu",
    )
    for _ in range(3):
        batch = mixed.sample()
        assert batch.obs.shape == (2, batch_size, OBS) and batch.returns_to_go.shape == (2, batch_size)
        offline_rows = (batch.rewards == 1.0).sum(-1)
        assert offline_rows.tolist() == [round(ratio * batch_size)] * 2
        assert mixed.offline_share == round(ratio * batch_size) / batch_size


def test_mixed_sampler_waits_for_a_finished_episode_and_draws_per_seed() -> None:
    seeds = [0, 1]
    empty = OnlineReplay(5, OBS, ACT)
    assert MixedSampler(
        DeviceSampler(_offline(), seeds, "cpu", discount=0.9), [empty, _online_buffer(5, -1)], seeds, 8, 0.5, "cpu"
    ).ready() == [False, True]
    assert MixedSampler(
        DeviceSampler(_offline(), seeds, "cpu", discount=0.9), [empty, empty], seeds, 8, 1.0, "cpu"
    ).ready() == [True, True]
    # Seed 1's rows do not depend on which other seeds it is sampled with.
    pair = MixedSampler(
        DeviceSampler(_offline(), seeds, "cpu", discount=0.9),
        [_online_buffer(5, -1), _online_buffer(6, -2)],
        seeds,
        8,
        0.5,
        "cpu",
    ).sample()
    alone = MixedSampler(
        DeviceSampler(_offline(), [1], "cpu", discount=0.9), [_online_buffer(6, -2)], [1], 8, 0.5, "cpu"
    ).sample()
    for a, b in zip(pair, alone):
        torch.testing.assert_close(a[1], b[0])


# ----- the online buffer --------------------------------------------------------------------
@pytest.mark.parametrize("ending", ["terminated", "truncated", "sparse-failed", "sparse-reached"])
def test_online_episode_returns_to_go_against_brute_force(ending: str) -> None:
    rewards = {
        "terminated": [1.0, -0.5, 2.0, 0.25],
        "truncated": [0.5, 0.5, 3.0],
        "sparse-failed": [-5.0, -5.0, -5.0],
        "sparse-reached": [-5.0, -5.0, 5.0],
    }[ending]
    n = len(rewards)
    buf = OnlineReplay(20, OBS, ACT)
    first = np.asarray([2.0, 1.0])
    buf.add_episode(
        buf.start_episode(1),
        np.zeros((2, OBS)),
        np.zeros((2, ACT)),
        first,
        np.zeros((2, OBS)),
        [False, True],
        [False, False],
        discount=0.9,
        sparse_reward_neg=-5.0,
    )
    terminated = np.zeros(n, bool)
    truncated = np.zeros(n, bool)
    (terminated if ending == "terminated" else truncated)[-1] = True
    buf.add_episode(
        buf.start_episode(2),
        np.zeros((n, OBS)),
        np.zeros((n, ACT)),
        np.asarray(rewards),
        np.zeros((n, OBS)),
        terminated,
        truncated,
        discount=0.9,
        sparse_reward_neg=-5.0,
    )
    want = np.full(n, -50.0) if ending == "sparse-failed" else _brute_rtg(np.asarray(rewards), 0.9)
    np.testing.assert_allclose(buf.returns_to_go[2 : 2 + n], want, rtol=1e-6)
    np.testing.assert_allclose(buf.returns_to_go[:2], _brute_rtg(first, 0.9), rtol=1e-6)
    assert buf.terminated[2 : 2 + n].tolist() == terminated.tolist()
    assert buf.truncated[2 : 2 + n].tolist() == truncated.tolist()
    state = buf.state()
    np.testing.assert_array_equal(OnlineReplay.from_state(state, 20).returns_to_go, buf.returns_to_go)


# ----- the online phase ---------------------------------------------------------------------
class _Evaluator:
    """Stands in for the trainer's evaluation: counts calls, returns one record per seed."""

    def __init__(self, k: int) -> None:
        self.k, self.calls = k, 0

    def evaluate(self) -> list[dict[str, float]]:
        self.calls += 1
        return [{"eval/return": 0.0} for _ in range(self.k)]


def _setup(**over) -> OnlineSetup:
    """The setup cql-train builds (online_setup from the run config), at test sizes: 12 env steps
    in 2 Pendulum envs with 5-step episodes, no offline steps; ``over`` replaces fields."""
    cfg = RunConfig(
        online=OnlineConfig(steps=12, envs=2, offline_ratio=0.5),
        train=TrainConfig(steps=0, batch_size=8, log_every=4, checkpoint_every=0),
        eval=EvalConfig(every=0, max_episode_steps=5),
        cql=CQLConfig(discount=0.9),
    )
    return dataclasses.replace(online_setup(cfg, _offline()), **over)


def _phase(seeds=(0,), calibration: bool = True, checkpoint=None, **over) -> OnlinePhase:
    agent = CQLAgent(
        OBS, ACT, list(seeds), NetworkConfig(hidden=[8, 8]), CQLConfig(n_actions=2, calibration=calibration)
    )
    sampler = DeviceSampler(_offline(), list(seeds), "cpu", discount=0.9)
    return OnlinePhase(_setup(**over), agent, sampler, _Evaluator(len(seeds)), [], checkpoint)


def test_online_episodes_enter_the_pool_only_when_they_end_with_their_returns_to_go() -> None:
    # Two envs, episodes of 5 steps, 12 env steps: each env ran 6 steps, finished one episode
    # (5 rows in the pool) and has one step of the next waiting outside it.
    phase = _phase(reward_scale=2.0, reward_bias=1.0)
    result = phase.run()
    buf = phase.buffers[0]
    assert result.status == "completed" and result.env_steps == 12
    assert buf.size == 10 and len(buf.episode_seeds) == 4
    for ep in range(2):
        rows = np.flatnonzero(buf.episode[: buf.size] == ep)
        assert len(rows) == 5 and buf.truncated[rows][-1] and not buf.terminated[rows].any()
        np.testing.assert_allclose(buf.returns_to_go[rows], _brute_rtg(buf.rewards[rows], 0.9), rtol=1e-5)
    # Rewards enter after the env's transform: Pendulum's are <= 0, so 2r + 1 <= 1.
    assert buf.rewards[: buf.size].max() <= 1.0
    # Updates wait for the first finished episodes (env step 10, the vector step that ends them
    # updates too), then utd = 1 per env step: 2 at step 10 and 2 at step 12.
    assert result.updates == [4]


def _final_actor(**over) -> list[torch.Tensor]:
    phase = _phase(**over)
    phase.run()
    return [p.detach().clone() for p in phase.agent.actor.parameters()]


@pytest.mark.parametrize(
    "flag",
    [{"utd": 2}, {"envs": 3}, {"random_steps": 6}, {"calibrate": False}, {"offline_ratio": 0.25}, {"steps": 16}],
    ids=["utd", "envs", "random_steps", "calibrate_online", "offline_ratio", "steps"],
)
def test_every_online_flag_changes_the_computation(flag: dict) -> None:
    base = _final_actor(steps=14)
    other = _final_actor(**{"steps": 14, **flag})
    assert max((a - b).abs().max().item() for a, b in zip(base, other)) > 0


def test_online_phase_resumes_exactly_from_its_checkpoint() -> None:
    """Agent, offline sampler, online buffers, every generator and each env's state come back."""
    seeds = [0, 1]
    straight = _phase(seeds, steps=14, random_steps=3)
    straight.run()

    saved: list = []
    first = _phase(
        seeds,
        steps=14,
        random_steps=3,
        checkpoint_every=6,
        checkpoint=lambda states: saved.append(
            copy.deepcopy((states, first.agent.checkpoint_state(), first.sampler.offline.state_dict()))
        ),
    )
    first.run()
    states, agent_state, sampler_state = next(x for x in saved if x[0][0]["env_steps"] == 6)
    assert [len(ep["env_actions"]) for ep in states[0]["episodes"]] == [3, 3]  # mid-episode

    resumed = _phase(seeds, steps=14, random_steps=3)
    resumed.agent.load_checkpoint_state(agent_state)
    resumed.sampler.offline.load_state_dict(sampler_state)
    resumed.restore(states)
    assert resumed.run().env_steps == 14
    for a, b in zip(straight.agent.state_dict().values(), resumed.agent.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for k in range(2):
        for name, value in straight.buffers[k].state().items():
            np.testing.assert_array_equal(value, resumed.buffers[k].state()[name])
    assert straight.updates == resumed.updates


def test_calibrate_online_turns_the_bound_off_for_the_phase() -> None:
    phase = _phase(calibrate=False)
    phase.run()
    assert phase.agent.calibrate is False
    assert _phase(calibrate=True, calibration=True).agent.calibrate is True


# ----- checks before anything trains --------------------------------------------------------
@pytest.mark.parametrize(
    "override, message",
    [
        ("online.offline_ratio=1.5", "online.offline_ratio must be in [0, 1]"),
        ("online.offline_ratio=-0.1", "online.offline_ratio must be in [0, 1]"),
        ("online.utd=0", "online.utd must be >= 1"),
        ("online.envs=0", "online.envs must be >= 1"),
        ("online.random_steps=-1", "online.random_steps must be >= 0"),
        ("train.steps=0", "pass online.steps=N"),
    ],
)
def test_bad_online_values_fail_at_validation(compose_cfg, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate(compose_cfg(["online.steps=10", override] if override != "train.steps=0" else [override]))


def test_online_from_scratch_and_ratio_default(compose_cfg) -> None:
    cfg = compose_cfg(["train.steps=0", "online.steps=10", "cql=sac"])
    validate(cfg)
    assert offline_ratio(cfg) == 0.0
    assert offline_ratio(compose_cfg(["online.steps=10"])) == 0.5
    assert offline_ratio(compose_cfg(["online.steps=10", "online.offline_ratio=0.25"])) == 0.25
    assert compose_cfg([]).online.calibrate_online is True


def test_data_checks_name_the_fix(compose_cfg) -> None:
    no_env = dataclasses.replace(_offline(), meta=DatasetMeta("file.hdf5"))
    with pytest.raises(ConfigError, match=r"online\.steps=5 needs an env.*eval\.env_id"):
        check_fine_tuning(compose_cfg(["online.steps=5", "eval.env_id=null"]), no_env)
    check_fine_tuning(compose_cfg(["online.steps=5", "eval.env_id=Pendulum-v1"]), no_env)
    no_ends = dataclasses.replace(_offline(), meta=DatasetMeta("file.hdf5", extra={"episode_ends_known": False}))
    with pytest.raises(ConfigError, match=r"cql\.calibration=true needs returns-to-go per episode"):
        check_fine_tuning(compose_cfg(["cql=calql"]), no_ends)
    check_fine_tuning(compose_cfg([]), no_ends)


# ----- end to end through the real cql-train ------------------------------------------------
TINY = [
    "network.hidden=[16,16]",
    "cql.n_actions=2",
    "train.batch_size=16",
    "train.log_every=10",
    "eval.episodes=1",
    "eval.every=20",
    "eval.max_episode_steps=15",
    "logger=none",
    "device=cpu",
    "train.threads=1",
    "train.progress=false",
]


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_cql_train_fine_tunes_end_to_end(tmp_path: Path) -> None:
    run_dir = tmp_path / "calql"
    args = ["cql=calql", "train.steps=20", "online.steps=40", f"run_dir={run_dir}", *TINY]
    proc = run_cli(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = _records(run_dir)
    online = [r for r in records if "online/env_steps" in r]
    assert [r["step"] for r in online] == [30, 40, 50, 60]  # one axis: 20 offline steps, then env steps
    assert all(r["online/offline_share"] == 0.5 for r in online if "online/offline_share" in r)
    with_updates = [r for r in online if "q/dataset_mc_return" in r]
    assert with_updates and all(
        "q/data" in r and "q/policy" in r and "cql/calibration_lifted" in r for r in with_updates
    )
    assert any("online/return" in r for r in online) and "eval/normalized_score" in records[-1]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 60
    # Each phase's rate over its own steps and time: offline gradient steps/s, and online env
    # steps/s (each with its online.utd=1 update; the first ones wait for a finished episode).
    assert summary["steps_per_s"] == pytest.approx(20 / summary["train_time_s"], rel=0.02)
    assert summary["online_env_steps"] == 40 and 0 < summary["online_updates"] <= 40
    assert summary["online_env_steps_per_s"] == pytest.approx(40 / summary["online_time_s"], rel=0.02)
    # The same command again: the online phase is done, nothing is repeated.
    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _records(run_dir) == records
    rerun = json.loads((run_dir / "summary.json").read_text())
    for key in ("steps_per_s", "online_env_steps", "online_updates", "online_time_s", "online_env_steps_per_s"):
        assert rerun[key] == summary[key], key


def test_cql_train_online_sac_from_scratch(tmp_path: Path) -> None:
    run_dir = tmp_path / "sac"
    proc = run_cli(["cql=sac", "train.steps=0", "online.steps=40", f"run_dir={run_dir}", *TINY], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    online = [r for r in _records(run_dir) if "online/offline_share" in r]
    assert online and all(r["online/offline_share"] == 0.0 for r in online)


def test_cql_train_refuses_fine_tuning_without_an_env(tmp_path: Path) -> None:
    path = tmp_path / "data.hdf5"
    make_d4rl_file(path, with_next_observations=True)
    proc = run_cli(
        ["env=d4rl-file", f"dataset.path={path}", "online.steps=10", f"run_dir={tmp_path / 'r'}", *TINY], cwd=tmp_path
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert "online.steps=10 needs an env to fine-tune in" in lines[-1] and "Traceback" not in proc.stderr
    assert not (tmp_path / "r" / "checkpoints").exists()


@pytest.mark.slow
def test_sigterm_in_the_online_phase_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import SUBPROCESS_ENV

    from cql_runner.checkpoint import load_checkpoint

    common = [
        *TINY,
        "cql=calql",
        "train.steps=10",
        "online.envs=2",
        "online.random_steps=4",
        "eval.every=0",
        "train.checkpoint_every=100000",
    ]
    split, full = tmp_path / "split", tmp_path / "full"
    exe = Path(sys.executable).parent / "cql-train"
    proc = subprocess.Popen(
        [str(exe), *common, "online.steps=100000", f"run_dir={split}"],
        cwd=tmp_path,
        env={**os.environ, **SUBPROCESS_ENV},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics, deadline = split / "metrics.jsonl", time.monotonic() + 300
    while not (metrics.exists() and "online/env_steps" in metrics.read_text()):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the online phase logged nothing in time"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-2000:]
    assert json.loads((split / "summary.json").read_text())["status"] == "interrupted"
    online = load_checkpoint(split / "checkpoints" / "last.pt")["online"]
    k = online["env_steps"]
    assert 10 <= k < 100000 and not online["complete"]

    total = [f"online.steps={k + 16}"]
    resumed = run_cli([*common, *total, f"run_dir={split}"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert run_cli([*common, *total, f"run_dir={full}"], cwd=tmp_path).returncode == 0
    a, b = load_checkpoint(full / "checkpoints" / "last.pt"), load_checkpoint(split / "checkpoints" / "last.pt")
    assert a["trainer"]["step"] == b["trainer"]["step"] == 10 + k + 16
    for name, tensor in a["agent"]["modules"].items():
        torch.testing.assert_close(b["agent"]["modules"][name], tensor, rtol=0, atol=0, msg=name)
    for key in ("sampler", "uniform_rng", "noise", "episodes_started", "updates"):
        assert repr(a["online"][key]) == repr(b["online"][key]), key
    for name, value in a["online"]["buffer"].items():
        np.testing.assert_array_equal(b["online"]["buffer"][name], value)
    steps = [r["step"] for r in _records(split)]
    assert steps == sorted(set(steps)) == [r["step"] for r in _records(full)]


def test_report_marks_the_switch_to_online_on_the_shared_axis(tmp_path: Path, monkeypatch) -> None:
    import yaml
    from matplotlib.axes import Axes

    from cql_runner.report.cli import main as report_main
    from cql_runner.report.collect_runs import collect

    for seed, online_steps in ((0, 40), (1, 40)):
        d = tmp_path / "ft" / str(seed)
        d.mkdir(parents=True)
        config = {
            "env": {"name": "hopper-medium"},
            "seed": seed,
            "train": {"steps": 20},
            "online": {"steps": online_steps},
            "cql": {"calibration": True},
        }
        (d / "config.yaml").write_text(yaml.safe_dump(config))
        rows = [{"step": s, "eval/normalized_score": float(s)} for s in (10, 20, 40, 60)]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    offline = tmp_path / "off" / "0"
    offline.mkdir(parents=True)
    (offline / "config.yaml").write_text(
        yaml.safe_dump(
            {"env": {"name": "hopper-medium"}, "seed": 0, "train": {"steps": 60}, "cql": {"calibration": False}}
        )
    )
    (offline / "metrics.jsonl").write_text(json.dumps({"step": 60, "eval/normalized_score": 1.0}) + "\n")

    from cql_runner.report.aggregate import group_runs, varied_keys
    from cql_runner.report.render import online_switch

    lines: list[float] = []
    real = Axes.axvline
    monkeypatch.setattr(Axes, "axvline", lambda self, x=0, *a, **k: (lines.append(x), real(self, x, *a, **k))[1])
    assert report_main([str(tmp_path), "--out", str(tmp_path / "report"), "--reps", "200"]) == 0
    assert lines == [20]  # one switch, for the fine-tuning group only
    runs = collect([tmp_path]).runs
    groups = group_runs(runs, varied_keys(runs))
    assert sorted(str(online_switch(g)) for g in groups) == ["20", "None"]
