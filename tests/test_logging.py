"""Loggers: JSONL durability and resume, console output, wandb fallbacks, fan-out isolation."""

from __future__ import annotations

import io
import json
import logging
import math
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from wandb_records import read_records

from cql_runner.config import LoggerConfig
from cql_runner.logging import (
    ConsoleLogger,
    JsonlLogger,
    Logger,
    MultiLogger,
    NullLogger,
    WandbLogger,
    read_jsonl,
)
from cql_runner.logging.console import format_duration, format_number
from cql_runner.logging.wandb_logger import ID_FILE, resolve_mode


# ----- jsonl -----------------------------------------------------------------------------
def test_jsonl_lines_are_flushed_as_written(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "metrics.jsonl"
    logger = JsonlLogger(path)
    logger.log({"loss/critic": 1.5, "n": np.float32(2.0), "t": torch.tensor(3.0)}, step=10)
    # Readable before close: a crash right now must lose nothing.
    lines = path.read_text().splitlines()
    assert json.loads(lines[0]) == {"step": 10, "loss/critic": 1.5, "n": 2.0, "t": 3.0}
    logger.log({"loss/critic": 1.0}, step=20)
    assert [r["step"] for r in read_jsonl(path)] == [10, 20]
    logger.close()
    logger.close()  # idempotent


def test_jsonl_nonfinite_values_stay_valid_json(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    with_nan = {"a": math.nan, "b": math.inf, "c": -np.inf, "d": torch.tensor(float("nan"))}
    logger = JsonlLogger(path)
    logger.log(with_nan, step=1)
    logger.close()

    def reject(token: str) -> None:
        raise AssertionError(f"bare {token} in the file is not valid JSON")

    raw = json.loads(path.read_text(), parse_constant=reject)
    assert raw == {"step": 1, "a": "NaN", "b": "Infinity", "c": "-Infinity", "d": "NaN"}
    (record,) = read_jsonl(path)
    assert math.isnan(record["a"]) and record["b"] == math.inf and record["c"] == -math.inf


def test_jsonl_rejects_non_scalar_metrics(tmp_path: Path) -> None:
    logger = JsonlLogger(tmp_path / "m.jsonl")
    with pytest.raises(TypeError, match="loss/critic"):
        logger.log({"loss/critic": torch.zeros(3)}, step=1)
    logger.close()


def test_jsonl_resume_drops_steps_after_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    logger = JsonlLogger(path)
    for step in range(1, 6):
        logger.log({"x": float(step)}, step=step * 100)
    logger.close()

    resumed = JsonlLogger(path, resume_step=300)
    assert [r["step"] for r in read_jsonl(path)] == [100, 200, 300]
    resumed.log({"x": 4.0}, step=400)
    resumed.close()
    steps = [r["step"] for r in read_jsonl(path)]
    assert steps == [100, 200, 300, 400]
    assert list(tmp_path.iterdir()) == [path]  # the atomic rewrite left no temp file


def test_jsonl_truncated_last_line_is_tolerated(tmp_path: Path, caplog) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1, "x": 1.0}\n{"step": 2, "x": 2.0}\n{"step": 3, "x"')
    assert [r["step"] for r in read_jsonl(path)] == [1, 2]

    # Reopening (also without resume) drops the torn line so the next append is clean.
    with caplog.at_level(logging.WARNING, logger="cql_runner"):
        logger = JsonlLogger(path)
    assert "truncated" in caplog.text
    logger.log({"x": 3.0}, step=3)
    logger.close()
    assert [r["step"] for r in read_jsonl(path)] == [1, 2, 3]


def test_jsonl_resume_with_truncated_tail(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"st')
    JsonlLogger(path, resume_step=2).close()
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n'


def test_read_jsonl_raises_on_corrupt_middle_line(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match=":2:"):
        read_jsonl(path)


# ----- console ---------------------------------------------------------------------------
class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_console_plain_lines_when_not_a_tty() -> None:
    stream = io.StringIO()
    console = ConsoleLogger(total_steps=20000, stream=stream)
    assert not console.uses_bar
    for step in range(1, 1001):
        console.advance(step)
    console.log({"loss/critic": 1.2345, "eval/normalized_score": 45.61, "other": 9.0}, 1000)
    console.log({"loss/critic": 1e-5}, 20000)
    console.close()
    first, second = stream.getvalue().splitlines()
    assert first.startswith("step 1000/20000 (5.0%) | ")
    assert "steps/s" in first and "| eta " in first
    assert "loss/critic 1.234" in first and "eval/normalized_score 45.61" in first
    assert "other" not in first
    assert second.startswith("step 20000/20000 (100.0%)") and "loss/critic 1.00e-05" in second
    assert "eta 0s" in second


def test_console_names_the_online_rate_env_steps() -> None:
    """A fine-tuning run's lines after train.steps count env steps (with their updates), not updates."""
    stream = io.StringIO()
    console = ConsoleLogger(total_steps=30, stream=stream, online_from=10)
    for step in (10, 20):
        time.sleep(0.002)  # a finite rate
        console.log({}, step)
    offline, online = stream.getvalue().splitlines()
    assert " steps/s" in offline and "env steps/s" not in offline
    assert "env steps/s" in online


def test_console_resumed_run_counts_from_start_step() -> None:
    stream = io.StringIO()
    console = ConsoleLogger(total_steps=100, start_step=50, stream=stream)
    console.log({}, 75)
    assert stream.getvalue().startswith("step 75/100 (75.0%)")


def test_console_disabled_prints_nothing() -> None:
    stream = FakeTty()
    console = ConsoleLogger(total_steps=10, enabled=False, stream=stream)
    console.advance(5)
    console.log({"loss/critic": 1.0}, 5)
    console.close()
    assert stream.getvalue() == ""


def test_console_tty_shows_a_bar() -> None:
    stream = FakeTty()
    console = ConsoleLogger(total_steps=1000, start_step=100, stream=stream)
    assert console.uses_bar
    for step in range(101, 1001):
        console.advance(step)
        if step % 250 == 0:
            console.log({"loss/critic": 0.5, "loss/actor": torch.tensor(-1.0)}, step)
    console.log({"eval/normalized_score": 42.0}, 1000)
    console.write("a message")
    console.close()
    console.close()
    out = stream.getvalue()
    assert "1000/1000" in out and "a message" in out
    # Evaluation results get a line of their own that the bar does not overwrite.
    assert "step 1000/1000 (100.0%)" in out and "eval/normalized_score 42" in out


def test_number_and_duration_formats() -> None:
    assert format_number(1.23456) == "1.235"
    assert format_number(123456.0) == "1.23e+05"
    assert format_number(0) == "0"
    assert format_number(np.float32(45.6)) == "45.6"
    assert format_number(math.nan) == "nan"
    assert format_duration(5) == "5s"
    assert format_duration(151) == "2m31s"
    assert format_duration(3720) == "1h02m"
    assert format_duration(2 * 86400 + 3600 * 4) == "2d04h"
    assert format_duration(math.nan) == "?"


# ----- MultiLogger / NullLogger ----------------------------------------------------------
class Recorder:
    def __init__(self, fail: bool = False, critical: bool = False) -> None:
        self.calls: list[tuple] = []
        self.fail = fail
        self.critical = critical
        self.closed = False

    def log(self, metrics, step):
        self.calls.append(("log", step))
        if self.fail:
            raise RuntimeError("remote down\nsecond line")

    def log_summary(self, summary):
        self.calls.append(("summary", dict(summary)))

    def close(self):
        self.closed = True
        if self.fail:
            raise RuntimeError("close failed")


def test_multilogger_isolates_a_failing_logger(caplog) -> None:
    good, bad = Recorder(), Recorder(fail=True)
    multi = MultiLogger([bad, good])
    with caplog.at_level(logging.WARNING, logger="cql_runner"):
        multi.log({"x": 1.0}, 1)
        multi.log({"x": 2.0}, 2)
        multi.log_summary({"final": 1})
        multi.close()
    assert good.calls == [("log", 1), ("log", 2), ("summary", {"final": 1})]
    assert bad.calls == [("log", 1)]  # skipped after its first failure
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Recorder" in warnings[0].getMessage()
    assert "second line" not in warnings[0].getMessage()
    assert good.closed and bad.closed  # a failed logger still gets closed


def test_multilogger_propagates_critical_loggers(tmp_path: Path) -> None:
    marked = Recorder(fail=True, critical=True)
    with pytest.raises(RuntimeError, match="remote down"):
        MultiLogger([Recorder(), marked]).log({"x": 1.0}, 1)

    listed = Recorder(fail=True)
    other = Recorder()
    multi = MultiLogger([listed, other], critical=[listed])
    with pytest.raises(RuntimeError):
        multi.log({"x": 1.0}, 1)
    with pytest.raises(RuntimeError, match="close failed"):
        multi.close()
    assert other.closed  # closed even though a critical logger raised first

    jsonl = JsonlLogger(tmp_path / "m.jsonl")
    assert MultiLogger([jsonl]).is_critical(jsonl)
    jsonl.close()
    with pytest.raises(ValueError):  # writing to a closed file must not be swallowed
        MultiLogger([jsonl]).log({"x": 1.0}, 1)


def test_multilogger_forwards_advance_to_console() -> None:
    stream = io.StringIO()
    console = ConsoleLogger(total_steps=10, stream=stream)
    MultiLogger([NullLogger(), console]).advance(7)
    assert console.step == 7


def test_null_logger_accepts_anything() -> None:
    logger = NullLogger(LoggerConfig(), run_dir="x", config={}, tags=("a",), anything=1)
    logger.log({"x": 1.0}, 1)
    logger.log_summary({"y": 2})
    logger.close()
    assert isinstance(logger, Logger)


# ----- wandb -----------------------------------------------------------------------------
_WANDB_VARS = (
    "WANDB_API_KEY",
    "WANDB_MODE",
    "WANDB_BASE_URL",
    "WANDB_IDENTITY_TOKEN_FILE",
    "WANDB_ENTITY",
    "WANDB_PROJECT",
    "WANDB_RUN_ID",
    "WANDB_RESUME",
    "WANDB_NAME",
    "WANDB_RUN_GROUP",
    "WANDB_TAGS",
    "WANDB_DISABLED",
)


def _teardown_wandb() -> None:
    # wandb caches its settings (and so the env it read) in a per-process singleton.
    if "wandb" in sys.modules:
        sys.modules["wandb"].teardown()


@pytest.fixture
def wandb_env(tmp_path: Path, monkeypatch):
    """A wandb that sees no real credentials and writes only under tmp_path."""
    home = tmp_path / "home"
    home.mkdir()
    for var in _WANDB_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(home / ".netrc"))
    for var, sub in (
        ("WANDB_DIR", "wandb_dir"),
        ("WANDB_CACHE_DIR", "cache"),
        ("WANDB_CONFIG_DIR", "config"),
        ("WANDB_DATA_DIR", "data"),
        ("WANDB_ARTIFACT_DIR", "artifacts"),
    ):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    _teardown_wandb()
    yield tmp_path
    _teardown_wandb()


def _offline_files(run_dir: Path) -> list[Path]:
    return [p for d in (run_dir / "wandb").glob("offline-run-*") for p in d.rglob("*") if p.is_file()]


def test_resolve_mode(monkeypatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert resolve_mode(None) == "online"
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_mode(None) == "offline"
    assert resolve_mode("disabled") == "disabled"


def test_wandb_offline_run_and_stable_id(wandb_env: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = wandb_env / "run"
    logger = WandbLogger(
        LoggerConfig(tags=["cfg"]), run_dir, config={"seed": 0}, run_name="hopper-s0", group="sweep", tags=("extra",)
    )
    assert logger.active and logger.mode == "offline"
    logger.log({"loss/critic": 1.0, "eval/normalized_score": 40.0}, step=100)
    logger.log_summary({"final/normalized_score": 40.0})
    logger.close()
    logger.close()

    run_id = (run_dir / ID_FILE).read_text().strip()
    assert run_id == logger.run_id
    assert any(p.name == f"run-{run_id}.wandb" for p in _offline_files(run_dir))

    again = WandbLogger(LoggerConfig(), run_dir, config={"seed": 0})
    assert again.run_id == run_id
    again.close()


def test_wandb_cfg_mode_wins_over_env(wandb_env: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "online")
    run_dir = wandb_env / "run"
    logger = WandbLogger(LoggerConfig(mode="disabled"), run_dir, config={})
    assert not logger.active and logger.mode == "disabled"
    logger.log({"x": 1.0}, 1)
    logger.log_summary({"x": 1.0})
    logger.close()
    assert not (run_dir / "wandb").exists() and not (run_dir / ID_FILE).exists()


def test_wandb_online_without_key_falls_back_offline(wandb_env: Path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("WANDB_MODE", "online")
    run_dir = wandb_env / "run"
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="cql_runner"):
        logger = WandbLogger(LoggerConfig(init_timeout=5.0), run_dir, config={})
        logger.log({"loss/critic": 1.0}, step=1)
        logger.close()
    assert time.monotonic() - start < 20
    assert logger.mode == "offline"
    assert "no API key found" in caplog.text and "wandb sync" in caplog.text
    assert _offline_files(run_dir)


def test_wandb_init_failure_leaves_a_noop_logger(wandb_env: Path, monkeypatch, caplog) -> None:
    import wandb

    def broken_init(**kwargs):
        raise wandb.errors.CommError("server unreachable")

    monkeypatch.setattr(wandb, "init", broken_init)
    cfg = SimpleNamespace(mode="offline", project="p", entity=None, group=None, name=None, tags=[], init_timeout=1.0)
    with caplog.at_level(logging.WARNING, logger="cql_runner"):
        logger = WandbLogger(cfg, wandb_env / "run", config={})
    assert not logger.active
    assert "CommError: server unreachable" in caplog.text and "local logs continue" in caplog.text
    logger.log({"x": 1.0}, 1)
    logger.log_summary({"x": 1.0})
    logger.close()
    # The id is kept even though init failed, so a later attempt continues the same run.
    assert (wandb_env / "run" / ID_FILE).exists()


def test_wandb_log_failure_disables_after_one_warning(wandb_env: Path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = WandbLogger(LoggerConfig(), wandb_env / "run", config={})
    run = logger.run

    def broken_log(*args, **kwargs):
        raise RuntimeError("socket closed")

    monkeypatch.setattr(run, "log", broken_log)
    with caplog.at_level(logging.WARNING, logger="cql_runner"):
        logger.log({"x": 1.0}, 1)
        logger.log({"x": 2.0}, 2)
    assert caplog.text.count("socket closed") == 1 and not logger.active
    logger.close()  # finishes the broken run, guarded


def test_wandb_plots_the_online_phase_against_env_steps(wandb_env: Path, monkeypatch) -> None:
    """Offline records on the gradient-step axis; online records (they carry online/env_steps)
    under online/, declared on the env-step axis, without a gradient step."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = wandb_env / "run"
    logger = WandbLogger(LoggerConfig(), run_dir, config={"seed": 0})
    logger.log({"loss/critic": 1.0, "eval/normalized_score": 10.0}, step=20)
    logger.log({"loss/critic": 2.0, "online/return": 5.0, "online/env_steps": 10.0}, step=30)
    logger.log({"eval/normalized_score": 30.0, "online/env_steps": 20.0}, step=40)
    logger.close()
    _teardown_wandb()  # the wandb service writes the run file out as it shuts down

    (wandb_file,) = [p for p in _offline_files(run_dir) if p.suffix == ".wandb"]
    deadline = time.monotonic() + 30
    records = read_records(wandb_file)
    while not any(r.HasField("exit") for r in records) and time.monotonic() < deadline:
        time.sleep(0.1)  # until the run's exit record is on disk
        records = read_records(wandb_file)
    metrics = {(r.metric.name or r.metric.glob_name): r.metric for r in records if r.HasField("metric")}
    assert metrics["*"].step_metric == "gradient_step"
    assert metrics["online/env_steps"].options.hidden
    for name in ("online/loss/critic", "online/return", "online/eval/normalized_score"):
        assert metrics[name].step_metric == "online/env_steps", name
    assert metrics["online/eval/normalized_score"].summary.last and metrics["eval/normalized_score"].summary.last
    rows = [
        {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
        for r in records
        if r.HasField("history")
    ]
    offline, first, second = (r for r in rows if "_step" in r)
    assert offline["gradient_step"] == 20 and offline["loss/critic"] == 1.0
    assert first == {**first, "online/loss/critic": 2.0, "online/return": 5.0, "online/env_steps": 10.0, "_step": 30}
    assert second["online/eval/normalized_score"] == 30.0 and "eval/normalized_score" not in second
    assert "gradient_step" not in first and "loss/critic" not in first
