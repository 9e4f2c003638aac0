"""Smoke test of scripts/bench_discrete.py: a tiny run writes the JSON it documents, with or without d3rlpy
(the peer is timed when CQL_RUNNER_PEER_VENV names a built peer venv)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER_VENV = os.environ.get("CQL_RUNNER_PEER_VENV")


def test_bench_discrete_smoke_writes_rows_ratios_and_memory(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "bench_discrete.py"),
        *("--rounds", "1", "--steps", "2", "--cnn-steps", "1", "--warmup", "1"),
        *("--frames", "300", "--transitions", "500", "--hidden", "16", "--memory-frames", "400"),
        *("--threads", "1", "--json", str(out), "--quiet"),
    ]
    cmd += ["--peer-venv", PEER_VENV] if PEER_VENV else ["--no-peer"]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ours cnn update" in proc.stdout
    report = json.loads(out.read_text())
    assert report["schema"] == "cql-runner-bench-discrete/1" and report["config"]["batch"] == 32
    rows = {r["name"]: r for r in report["rows"]}
    assert {"ours_mlp", "ours_mlp_sampled", "ours_cnn", "ours_cnn_sampled"} <= set(rows)
    for r in rows.values():
        s = r["steps_per_s"]
        assert 0 < s["min"] <= s["median"] <= s["max"] and len(r["per_round"]) == 1
    assert set(report["ratios"]) == {"mlp", "mlp_sampled", "cnn", "cnn_sampled"}
    if PEER_VENV:
        assert report["peer"]["version"] == "2.8.1" and all(v > 0 for v in report["ratios"].values())
    else:
        assert all(v is None for v in report["ratios"].values()) and "skipped" in report["peer"]["reason"]
    mem = report["memory"]
    # A replay load keeps one uint8 byte per pixel plus a few index bytes per frame.
    assert mem["frames"] == 400 and mem["frames_stay_uint8"] and mem["frame_bytes_mb"] * 2**20 == 400 * 84 * 84
    assert mem["sampler_bytes_mb"] < 1.01 * mem["frame_bytes_mb"] + 64 * 400 / 2**20
