"""Eval videos: recorded every k evaluations, and never fatal."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from cql_runner.video import VideoRecorder, record_episodes


def _zero_policy(obs: np.ndarray) -> np.ndarray:
    return np.zeros((*obs.shape[:2], 3), np.float32)


def test_record_episodes_renders_one_clip_per_seed() -> None:
    clips = record_episodes("Hopper-v5", _zero_policy, [0, 1], None, max_frames=6, size=(64, 48))
    assert len(clips) == 2
    assert all(c.shape[1:] == (48, 64, 3) and 2 <= c.shape[0] <= 6 for c in clips)


def test_recorder_saves_every_kth_evaluation(tmp_path: Path) -> None:
    rec = VideoRecorder("Hopper-v5", None, every=2, max_frames=4)
    first = rec.maybe_record(_zero_policy, [0], [tmp_path], step=10)
    second = rec.maybe_record(_zero_policy, [0], [tmp_path], step=20)
    assert first == [None]
    assert second[0] == tmp_path / "videos" / "eval_step00000020.gif" and second[0].stat().st_size > 0


def test_a_render_failure_warns_once_and_turns_videos_off(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rec = VideoRecorder("NoSuchEnv-v0", None, every=1, max_frames=4)
    with caplog.at_level(logging.WARNING, logger="cql_runner"):
        assert rec.maybe_record(_zero_policy, [0], [tmp_path], step=1) == [None]
        assert rec.maybe_record(_zero_policy, [0], [tmp_path], step=2) == [None]
    assert sum("eval video failed" in r.message for r in caplog.records) == 1
    assert not rec.enabled


def test_classic_control_renders_headless_and_is_shrunk() -> None:
    # Pendulum (the default task) renders through pygame at a fixed 500×500; clips are shrunk to fit size.
    clips = record_episodes(
        "Pendulum-v1", lambda obs: np.zeros((*obs.shape[:2], 1), np.float32), [0], None, max_frames=3, size=(240, 180)
    )
    assert clips[0].shape == (3, 167, 167, 3) and clips[0].std() > 0
