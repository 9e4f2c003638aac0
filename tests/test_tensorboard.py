"""logger=tensorboard (alone and beside wandb): event files read back by TensorBoard's own reader equal
metrics.jsonl, also after a resume; the config, eval video and HParams are there; wandb declares
each metric's x-axis and summaries and records the sweep's varied keys."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import TINY_OVERRIDES, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from wandb_records import read_records

from cql_runner.logging import read_jsonl
from cql_runner.logging.tensorboard_logger import read_scalars

NO_LOGGER = [o for o in TINY_OVERRIDES if not o.startswith("logger=")]


def jsonl_series(path: Path) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    for record in read_jsonl(path):
        for key, value in record.items():
            if key != "step":
                series.setdefault(key, []).append((record["step"], float(value)))
    return series


def assert_same_series(tb: dict[str, list[tuple[int, float]]], jsonl: dict[str, list[tuple[int, float]]]) -> None:
    logged = {k: v for k, v in tb.items() if not k.startswith("summary/")}
    assert set(logged) == set(jsonl)
    for key, points in jsonl.items():
        assert [s for s, _ in logged[key]] == [s for s, _ in points], key  # each step once, in order
        for (_, got), (_, want) in zip(logged[key], points):
            assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, rel=1e-6, abs=1e-6), key


def test_tensorboard_matches_metrics_jsonl_with_config_video_hparams_and_resume(
    minari_root: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    args = [
        *NO_LOGGER,
        "logger=tensorboard",
        "eval.every=50",
        "eval.video_every=2",
        "eval.video_max_frames=5",
        "train.checkpoint_every=100",
        f"run_dir={run_dir}",
    ]
    proc = run_cli([*args, "train.steps=200"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "eval video failed" not in proc.stderr  # Pendulum renders headless
    tb = run_dir / "tb"
    assert_same_series(read_scalars(tb), jsonl_series(run_dir / "metrics.jsonl"))

    acc = EventAccumulator(str(tb), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    videos = acc.Images("eval/video")
    assert [v.step for v in videos] == [100, 200]
    assert videos[0].encoded_image_string[:6] == b"GIF89a"
    config_text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "tau:" in config_text and "pendulum" in config_text
    hparams = acc.summary_metadata  # the HParams plugin's session records
    assert any(m.plugin_data.plugin_name == "hparams" for m in hparams.values())
    summary = json.loads((run_dir / "summary.json").read_text())
    final = read_scalars(tb)["summary/final_normalized_score"]
    assert final == [(200, pytest.approx(summary["final_normalized_score"], rel=1e-6))]

    # Resume from step 100 (last.pt gone): TensorBoard hides what the first attempt logged after it,
    # so every step appears once, as in the rewritten metrics.jsonl.
    (run_dir / "checkpoints" / "last.pt").unlink()
    proc = run_cli([*args, "train.steps=250"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(list(tb.glob("events.out.tfevents.*"))) == 2
    series = jsonl_series(run_dir / "metrics.jsonl")
    assert [s for s, _ in series["eval/normalized_score"]] == [50, 100, 150, 200, 250]
    assert_same_series(read_scalars(tb), series)


@pytest.mark.slow  # a two-job sweep: about 60 s on a busy 2-core machine
def test_several_loggers_and_wandb_metric_declarations(minari_root: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    env = {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DIR": str(tmp_path / "wandb"),
        "HOME": str(tmp_path),
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb_config"),
        "WANDB_CACHE_DIR": str(tmp_path / "wandb_cache"),
        "WANDB_API_KEY": "",
    }
    proc = run_cli(
        ["-m", "cql.tau=1,5", *NO_LOGGER, "logger=[wandb,tensorboard]", "train.steps=100", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    for job, tau in (("0", 1.0), ("1", 5.0)):
        run_dir = sweep / job
        assert read_scalars(run_dir / "tb")["eval/normalized_score"]  # tensorboard beside wandb
        assert (run_dir / "metrics.jsonl").stat().st_size > 0  # jsonl always on
        (wandb_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
        records = read_records(wandb_file)
        metrics = {(r.metric.name or r.metric.glob_name): r.metric for r in records if r.HasField("metric")}
        assert metrics["gradient_step"].options.hidden
        assert metrics["*"].step_metric == "gradient_step"
        score = metrics["eval/normalized_score"]
        assert score.step_metric == "gradient_step" and score.summary.last and score.summary.max
        best = metrics["eval/best_normalized_score"]
        assert best.summary.max and not best.summary.last
        (run,) = [r.run for r in records if r.HasField("run")]
        config = {item.key: json.loads(item.value_json) for item in run.config.update}
        assert config["sweep"] == {"cql.tau": tau}
        assert config["cql"]["tau"] == tau
        history = [r.history for r in records if r.HasField("history")]
        logged = {
            item.key or ".".join(item.nested_key): json.loads(item.value_json) for h in history for item in h.item
        }
        assert "gradient_step" in logged


def test_tensorboard_plots_the_online_phase_against_env_steps(tmp_path: Path) -> None:
    """Online records go to tb/online, under online/, at their env step; a resume in the online
    phase purges what the interrupted attempt logged after the checkpoint, so each env step appears once."""
    from types import SimpleNamespace

    from cql_runner.logging.tensorboard_logger import TensorBoardLogger

    cfg = SimpleNamespace(subdir="tb", flush_secs=1)
    first = TensorBoardLogger(cfg, tmp_path)
    first.log({"loss/critic": 1.0}, 20)  # offline: 20 gradient steps
    for env_step in (10, 20, 30):
        first.log({"loss/critic": float(env_step), "online/env_steps": float(env_step)}, 20 + env_step)
    first.close()
    # Resumed from the checkpoint at env step 20 (shared step 40): env step 30 is logged again.
    again = TensorBoardLogger(cfg, tmp_path, resume_step=40)
    again.log({"loss/critic": 31.0, "online/return": 2.0, "online/env_steps": 30.0}, 50)
    again.close()

    assert read_scalars(tmp_path / "tb") == {"loss/critic": [(20, 1.0)]}
    online = read_scalars(tmp_path / "tb" / "online")
    assert online["online/loss/critic"] == [(10, 10.0), (20, 20.0), (30, 31.0)]
    assert online["online/return"] == [(30, 2.0)] and "online/env_steps" not in online
