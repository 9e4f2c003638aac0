"""Failure behaviour through the real `cql-train`: each case ends in one line that names the fix,
the documented exit status, and every file written before it intact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import SUBPROCESS_ENV, TINY_OVERRIDES, run_cli, start_cli, wait_for_file
from data_helpers import make_minari_dataset

from cql_runner.checkpoint import load_checkpoint
from cql_runner.logging import read_jsonl
from cql_runner.strict_json import dumps

FAST = [*TINY_OVERRIDES, "eval.every=0"]


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The one line a failed run ends with; there must be no traceback."""
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("cql-train: error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name != "run.lock"
    }


# ----- 1. two processes on one run dir --------------------------------------------------
def test_second_process_on_a_run_dir_is_refused_naming_the_holder(minari_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [*FAST, "train.steps=1000000", "train.log_every=20", f"run_dir={run_dir}"]
    first = start_cli(args, tmp_path)
    try:
        wait_for_file(run_dir / "metrics.jsonl", first)
        second = run_cli(args, cwd=tmp_path)
        assert second.returncode == 2
        line = error_line(second)
        assert f"run dir {run_dir} is in use by PID {first.pid}" in line
        assert first.poll() is None, "the first run must go on"
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 0
    steps = [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")]
    assert steps == sorted(set(steps)) and steps, "steps logged twice"
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
    # The lock died with its process: the same command now resumes.
    again = run_cli([*FAST, f"train.steps={steps[-1] + 20}", "train.log_every=20", f"run_dir={run_dir}"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr


# ----- 2. resuming with a different config ----------------------------------------------
def test_resume_with_changed_values_is_refused_before_anything_is_written(minari_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert run_cli([*FAST, "train.steps=100", f"run_dir={run_dir}"], cwd=tmp_path).returncode == 0
    before = snapshot(run_dir)

    proc = run_cli([*FAST, "train.steps=150", "cql.tau=5", "seed=3", f"run_dir={run_dir}"], cwd=tmp_path)
    assert proc.returncode == 2
    line = error_line(proc)
    assert "cql.tau 10.0 -> 5.0" in line and "seed 0 -> 3" in line and "resume_allow_changes=true" in line
    assert snapshot(run_dir) == before

    # A new network shape cannot continue from the checkpoint, opt-in or not.
    proc = run_cli(
        [*FAST, "train.steps=150", "network.hidden=[16,16]", "resume_allow_changes=true", f"run_dir={run_dir}"],
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "network.hidden [32, 32] -> [16, 16]" in error_line(proc)
    assert snapshot(run_dir) == before


def test_resume_allow_changes_continues_and_records_the_changes(minari_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert run_cli([*FAST, "train.steps=100", f"run_dir={run_dir}"], cwd=tmp_path).returncode == 0
    proc = run_cli(
        [*FAST, "train.steps=150", "cql.n_actions=2", "resume_allow_changes=true", f"run_dir={run_dir}"], cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in (run_dir / "config_changes.jsonl").read_text().splitlines()]
    assert records == [{"step": 100, "time": records[0]["time"], "changes": {"cql.n_actions": {"old": 4, "new": 2}}}]
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["trainer"]["step"] == 150
    assert "n_actions: 2" in (run_dir / "config.yaml").read_text()
    # Extending the now-recorded config needs no opt-in.
    assert run_cli([*FAST, "train.steps=200", "cql.n_actions=2", f"run_dir={run_dir}"], cwd=tmp_path).returncode == 0


# ----- 8. resume=<a dir that does not exist> --------------------------------------------
def test_resume_from_a_missing_dir_is_an_error_and_creates_nothing(minari_root: Path, tmp_path: Path) -> None:
    missing = tmp_path / "runs" / "typo"
    proc = run_cli([*FAST, f"resume={missing}"], cwd=tmp_path)
    assert proc.returncode == 2
    assert f"resume={missing}: no such run dir" in error_line(proc)
    assert not missing.exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli([*FAST, f"resume={empty}"], cwd=tmp_path)
    assert proc.returncode == 2
    assert "holds no checkpoint to resume from; pass run_dir=" in error_line(proc)
    assert list(empty.iterdir()) == []


# ----- 5. Ctrl-C ---------------------------------------------------------------------------
def test_ctrl_c_checkpoints_marks_the_run_interrupted_and_exits_130(minari_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [*FAST, "train.steps=1000000", "train.log_every=20", "train.checkpoint_every=1000000", f"run_dir={run_dir}"]
    proc = start_cli(args, tmp_path)
    wait_for_file(run_dir / "metrics.jsonl", proc)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stdout + stderr and "KeyboardInterrupt" not in stdout + stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["interrupted_by"] == "SIGINT"
    assert summary["error"] is None
    step = load_checkpoint(run_dir / "checkpoints" / "last.pt")["trainer"]["step"]
    assert step == summary["steps"] >= 20
    assert stderr.strip().splitlines()[-1] == (
        f"cql-train: interrupted at step {step}; rerun the same command to resume"
    )


def test_a_second_ctrl_c_ends_the_run_at_once(minari_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # An evaluation every step keeps the run busy for a while after the first Ctrl-C.
    args = [
        *TINY_OVERRIDES,
        "eval.every=1",
        "eval.episodes=4",
        "train.steps=1000000",
        "train.checkpoint_every=1000000",
        f"run_dir={run_dir}",
    ]
    proc = start_cli(args, tmp_path)
    wait_for_file(run_dir / "metrics.jsonl", proc)
    proc.send_signal(signal.SIGINT)
    for line in proc.stdout:  # the run's log: the first Ctrl-C is acknowledged
        if "received SIGINT" in line:
            break
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGINT
    assert not (run_dir / "checkpoints" / "last.pt").exists()


def test_ctrl_c_handler_restores_the_default_action() -> None:
    from cql_runner.preemption import PreemptionFlag

    with PreemptionFlag() as flag:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert flag.requested and flag.signal_name == "SIGINT"
        assert signal.getsignal(signal.SIGINT) is signal.SIG_DFL
        assert flag.previous_handler() is None  # Python's KeyboardInterrupt handler is not forwarded to
    assert signal.getsignal(signal.SIGINT) is signal.SIG_DFL
    signal.signal(signal.SIGINT, signal.default_int_handler)


# ----- 4. NaN or inf in the dataset; strict JSON -----------------------------------------
def test_nonfinite_data_is_refused_at_load_naming_field_episode_and_count(minari_root: Path, tmp_path: Path) -> None:
    folder = make_minari_dataset("test/pendulum/nonfinite-v0", n_episodes=4, max_steps=20)
    with h5py.File(folder / "data" / "main_data.hdf5", "r+") as f:
        f["episode_1/observations"][3, 0] = np.nan
        rewards = f["episode_2/rewards"][...]
        rewards[[5, 7]] = [np.inf, np.nan]
        f["episode_2/rewards"][...] = rewards
    run_dir = tmp_path / "run"
    proc = run_cli([*FAST, "dataset.id=test/pendulum/nonfinite-v0", f"run_dir={run_dir}"], cwd=tmp_path)
    assert proc.returncode == 2
    line = error_line(proc)
    assert (
        "dataset test/pendulum/nonfinite-v0: observations has 1 NaN/inf value in episode 1 "
        "(first at step 3 of episode 1)" in line
    )
    assert "rewards has 2 NaN/inf values in episode 2 (first at step 5 of episode 2)" in line
    assert "next_observations has 1 NaN/inf value in episode 1 (first at step 2 of episode 1)" in line
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.jsonl").exists()


def test_summaries_are_strict_json() -> None:
    text = dumps({"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": -float("inf")}, "e": 2})
    assert json.loads(text, parse_constant=pytest.fail) == {"a": None, "b": [1.0, None], "c": {"d": None}, "e": 2}


# ----- 3. disk full while checkpointing ----------------------------------------------------
@pytest.fixture
def small_fs(tmp_path: Path) -> Path | None:
    """A real 4 MiB tmpfs when this process may mount one (root), else None."""
    mount = tmp_path / "fs"
    mount.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True
        ).returncode
        != 0
    ):
        yield None
        return
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(fs: Path, leave: int) -> Path:
    """Fill the filesystem of ``fs`` until only ``leave`` bytes are free."""
    st = os.statvfs(fs)
    filler = fs / "filler"
    filler.write_bytes(b"\0" * max(st.f_bavail * st.f_frsize - leave, 0))
    return filler


DISK_FULL_PATCH = """
import errno, sys
import cql_runner.checkpoint as ckpt
from cql_runner.cli import train_main
calls = []
def full(f, data):
    calls.append(1)
    if len(calls) > {allowed}:
        raise OSError(errno.ENOSPC, "No space left on device")
    f.write(data); f.flush()
ckpt._write_all = full
sys.argv = ["cql-train", *sys.argv[1:]]
train_main()
"""


def test_disk_full_while_checkpointing_is_one_line_and_keeps_the_checkpoints(
    minari_root: Path, tmp_path: Path, small_fs: Path | None
) -> None:
    run_dir = (small_fs or tmp_path) / "run"
    args = [*FAST, "train.checkpoint_every=50", "train.log_every=1000000", f"run_dir={run_dir}"]
    assert run_cli([*args, "train.steps=50"], cwd=tmp_path).returncode == 0
    size = (run_dir / "checkpoints" / "last.pt").stat().st_size
    if small_fs is not None:
        # Room for the step-100 checkpoint, not for the one at step 150.
        filler = fill(small_fs, leave=size + size // 2 + 16 * 4096)
        proc = run_cli([*args, "train.steps=200"], cwd=tmp_path)
    else:  # no way to fill a real filesystem here: the write itself reports ENOSPC
        exe = [sys.executable, "-c", DISK_FULL_PATCH.format(allowed=1), *args, "train.steps=200"]
        proc = subprocess.run(
            exe, cwd=tmp_path, env={**os.environ, **SUBPROCESS_ENV}, capture_output=True, text=True, timeout=180
        )
    assert proc.returncode == 2
    assert error_line(proc) == (
        f"cql-train: error: cannot write checkpoint {run_dir}/checkpoints/last.pt: "
        "no space left on device; free space and rerun to resume from step 100"
    )
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["trainer"]["step"] == 100
    assert load_checkpoint(run_dir / "checkpoints" / "prev.pt")["trainer"]["step"] == 50
    assert not list((run_dir / "checkpoints").glob(".ckpt-*"))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "no space left on device" in summary["error"]

    if small_fs is not None:  # freeing space is all a rerun needs
        filler.unlink()
        proc = run_cli([*args, "train.steps=200"], cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["trainer"]["step"] == 200


# ----- 9. a sweep with a bad value --------------------------------------------------------
def test_a_sweep_records_every_job_tallies_them_and_fails(minari_root: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_cli(
        ["-m", *FAST, "train.steps=40", "train.log_every=20", "cql.tau=5,-1", f"hydra.sweep.dir={sweep}"], cwd=tmp_path
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1] == f"cql-train: sweep {sweep}: 2 jobs: 1 completed, 1 failed"
    good, bad = (json.loads((sweep / str(k) / "summary.json").read_text(), parse_constant=pytest.fail) for k in (0, 1))
    assert good["status"] == "completed"
    assert bad["status"] == "failed" and bad["error"].startswith("ConfigError: cql.tau must be >= 0 (got -1.0)")
    assert "tau: -1.0" in (sweep / "1" / "config.yaml").read_text()

    # cql-report sees that tau was swept and lists the failed job under its setting.
    report = run_cli([str(sweep), "--out", str(tmp_path / "report")], cwd=tmp_path, script="cql-report")
    assert report.returncode == 0, report.stderr
    assert "2 runs (1 completed, 0 running, 1 failed" in report.stdout and "cql.tau" in report.stdout
    rows = (tmp_path / "report" / "report.csv").read_text().splitlines()
    header = rows[0].split(",")
    by_tau = {r.split(",")[header.index("cql.tau")]: r.split(",") for r in rows[1:]}
    assert by_tau["-1.0"][header.index("n_failed")] == "1" and by_tau["5.0"][header.index("n_completed")] == "1"


# ----- 10. cql-report on a run still being written ----------------------------------------
def test_report_shows_a_run_being_written_as_running(minari_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "a"
    assert run_cli([*FAST, "train.steps=100", "train.log_every=25", f"run_dir={run_dir}"], cwd=tmp_path).returncode == 0
    metrics = run_dir / "metrics.jsonl"
    text = metrics.read_text()
    metrics.write_text(text[: len(text) - 20])  # the writer was cut mid-line
    (run_dir / "summary.json").write_text("")  # created, not yet written
    proc = run_cli([str(tmp_path / "runs"), "--out", str(tmp_path / "report")], cwd=tmp_path, script="cql-report")
    assert proc.returncode == 0, proc.stderr
    assert "1 runs (0 completed, 1 running, 0 failed, 0 skipped)" in proc.stdout
    assert "skipping" not in proc.stderr
    report = (tmp_path / "report" / "report.md").read_text()
    assert f"| {run_dir} | running | 75/100 |" in report


# ----- 7. sizes that cannot fit ------------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("cql.n_actions=1000000", "one update step needs at least "),
        (
            "train.batch_size=100000000",
            "train.batch_size=100000000 is larger than the dataset (400 transitions); "
            "pass train.batch_size=256 or another value <= 400",
        ),
    ],
)
def test_sizes_that_cannot_fit_are_refused_before_building(
    minari_root: Path, tmp_path: Path, override: str, expected: str
) -> None:
    run_dir = tmp_path / "run"
    started = time.monotonic()
    proc = run_cli([*FAST, override, f"run_dir={run_dir}"], cwd=tmp_path)
    assert proc.returncode == 2
    line = error_line(proc)
    assert expected in line
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.jsonl").exists()
    assert time.monotonic() - started < 60


def test_the_memory_estimate_grows_with_the_critic_pass() -> None:
    from cql_runner.memory_estimate import update_step_bytes

    kw = dict(
        obs_dim=3, act_dim=1, critic_hidden=[256, 256], n_critics=2, n_seeds=1, conservative=True, max_backup=False
    )
    # batch 256, N = 10: 7936 critic rows × (3 + 1 + 512 + 1) widths × 2 critics × (2 + ...) floats
    small = update_step_bytes(batch_size=256, n_actions=10, **kw)
    rows, widths = 256 * 31, 3 + 1 + 512 + 1
    assert small == 4 * (2 * rows * widths * 2 + 256 * widths * 2 + 3 * 10 * 256 * 1)
    assert update_step_bytes(batch_size=256, n_actions=1_000_000, **kw) > 1000 * 1024**3
    assert update_step_bytes(batch_size=256, n_actions=10, **{**kw, "n_seeds": 4}) == 4 * small


# ----- 6. wandb configured but unreachable ------------------------------------------------
def test_unreachable_wandb_costs_seconds_and_says_how_to_sync(minari_root: Path, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on: a dead server
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "WANDB_MODE": "online",
        "WANDB_API_KEY": "x" * 40,
        "WANDB_BASE_URL": f"http://127.0.0.1:{port}",
        "HOME": str(home),
        "NETRC": str(home / ".netrc"),
        "WANDB_DIR": str(tmp_path / "wandb_dir"),
        "WANDB_CACHE_DIR": str(tmp_path / "cache"),
        "WANDB_CONFIG_DIR": str(tmp_path / "config"),
        "WANDB_DATA_DIR": str(tmp_path / "data"),
        "WANDB_CONSOLE": "off",
    }
    run_dir = tmp_path / "run"
    args = [a for a in FAST if not a.startswith("logger=")]
    # With init_timeout=300 an online init against the dead server would block for over 5 minutes.
    proc = run_cli(
        [
            *args,
            "logger=wandb",
            "logger.wandb.mode=online",
            "logger.wandb.init_timeout=300",
            "train.steps=50",
            f"run_dir={run_dir}",
        ],
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert f"wandb: server http://127.0.0.1:{port} unreachable" in out
    assert "sync later with `wandb sync " in out
    assert list((run_dir / "wandb").glob("offline-run-*"))
    summary = json.loads((run_dir / "summary.json").read_text())
    # Start-up, evaluation and closing together (seconds on a quiet machine; 38 s measured under a load
    # average of 15 on 2 cores), where the online init alone would take init_timeout + 10 = 310 s.
    assert summary["wall_time_s"] - summary["train_time_s"] < 120


# ----- 11. cql-collect: the expert needed only for the reference score ----------------------
def test_collect_random_says_first_that_sac_is_only_for_the_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import minari

    store = tmp_path / "m"
    env = {"MINARI_DATASETS_PATH": str(store), "CQL_RUNNER_CACHE_DIR": str(tmp_path / "cache")}
    proc = run_cli(
        [
            "env=Pendulum-v1",
            "level=random",
            "collect.steps=200",
            "sac.steps=300",
            "sac.start_steps=100",
            "sac.eval_every=150",
            "sac.eval_episodes=1",
            "sac.hidden=[16,16]",
            "ref_episodes=1",
            "progress=false",
        ],
        cwd=tmp_path,
        script="cql-collect",
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    first = proc.stderr.splitlines()[0]
    assert first.startswith(
        "cql-collect: level=random needs an expert only for the reference score "
        "ref_max_score: training SAC for sac.steps=300 takes at least "
    )
    assert first.endswith("here; pass ref_max_score=<expert return> to skip it")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(store))
    meta = minari.load_dataset("cql_runner/pendulum/random-v0").storage.metadata
    assert meta["cql_runner"]["reference_sources"] == {
        "ref_min_score": "measured: mean return of uniform random actions (ref_episodes=1)",
        "ref_max_score": "measured: mean return of the deterministic expert SAC snapshot (ref_episodes=1)",
    }


def test_collect_uses_d4rl_references_for_d4rl_tasks_and_trains_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import minari

    from cql_runner.reference_scores import D4RL_REFERENCE

    store = tmp_path / "m"
    env = {"MINARI_DATASETS_PATH": str(store), "CQL_RUNNER_CACHE_DIR": str(tmp_path / "cache")}
    proc = run_cli(
        ["env=Hopper-v5", "level=random", "collect.steps=200", "ref_episodes=1", "progress=false"],
        cwd=tmp_path,
        script="cql-collect",
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "needs an expert" not in proc.stderr and not (tmp_path / "cache").exists()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(store))
    meta = minari.load_dataset("mujoco/hopper/random-v0").storage.metadata
    assert (meta["ref_min_score"], meta["ref_max_score"]) == pytest.approx(D4RL_REFERENCE["hopper"])
    assert meta["cql_runner"]["reference_sources"] == {
        "ref_min_score": "D4RL (hopper)",
        "ref_max_score": "D4RL (hopper)",
    }


# ----- also: Hydra's conversion errors and the corrupt-checkpoint warning ------------------
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("cql.tau=abc", "cql.tau=abc: Value 'abc' of type 'str' could not be converted to Float; e.g. cql.tau=10.0"),
        (
            "cql.lagrange=maybe",
            "cql.lagrange=maybe: Value 'maybe' is not a valid bool (type str); e.g. cql.lagrange=true",
        ),
        (
            "network.hidden=[32,x]",
            "network.hidden=[32,x]: Value 'x' of type 'str' could not be converted to Integer; "
            "e.g. network.hidden=[256,256,256]",
        ),
    ],
)
def test_a_value_of_the_wrong_type_is_one_line_and_exit_2(tmp_path: Path, override: str, expected: str) -> None:
    proc = run_cli([*FAST, override], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"cql-train: error: {expected}"
    assert list(tmp_path.iterdir()) == []


def test_a_swept_value_of_the_wrong_type_is_caught_too(tmp_path: Path) -> None:
    proc = run_cli(["-m", *FAST, "cql.tau=5,abc"], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("cql-train: error: cql.tau=5,abc: Value 'abc'")


def test_a_corrupt_checkpoint_is_reported_once_in_one_line(minari_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [*FAST, "train.checkpoint_every=50", f"run_dir={run_dir}"]
    assert run_cli([*args, "train.steps=100"], cwd=tmp_path).returncode == 0
    last = run_dir / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    proc = run_cli([*args, "train.steps=150"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "is corrupt" in line]
    assert len(lines) == 1, lines
    assert lines[0].endswith(
        f"checkpoint {last} is corrupt; falling back to prev.pt at step 50 "
        "(the corrupt file is set aside at the next checkpoint)"
    )
    assert len(list((run_dir / "checkpoints").glob("last.corrupt-*.pt"))) == 1
