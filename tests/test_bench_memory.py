"""Smoke test of scripts/bench_memory.py: a tiny run in a subprocess writes JSON of the documented schema.

Only the first load is measured (the Minari read, flatten and cache write: the path with the
most code; a cached load is the npz read that test_data_minari covers), so two processes run
instead of four and the test stays well under 30 s on a busy 2-core machine.

Only the shape and sanity of the numbers are checked (finite, positive, consistent), never a
memory threshold: RSS depends on the machine, the allocator and the libraries installed. The
real measurement (1M transitions) is run by hand: python scripts/bench_memory.py --json PATH.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN_KEYS = (
    "rss_after_imports",
    "rss_after_load",
    "rss_after_sampler",
    "rss_after_agent",
    "rss_before_steps",
    "peak_during_steps",
    "rss_after_steps",
    "dataset_float32_bytes",
    "data_resident_bytes",
    "ratio_resident_to_float32",
    "step_overhead_bytes",
    "load_s",
)


def test_bench_memory_smoke_writes_the_json_schema(tmp_path: Path) -> None:
    out = tmp_path / "bench_memory.json"
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "bench_memory.py"),
        "--transitions",
        "5000",
        "--control",
        "1000",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--jobs",
        "2",
        "--loads",
        "first",
        "--data-dir",
        str(tmp_path / "data"),
        "--json",
        str(out),
        "--quiet",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pass:" in proc.stdout and "ratio" in proc.stdout

    report = json.loads(out.read_text())
    assert report["schema"] == "cql-runner-bench-memory/1"
    assert report["config"]["transitions"] == {"large": 5000, "control": 1000}
    assert isinstance(report["pass"], bool)
    assert math.isfinite(report["ratio_resident_to_float32"]) and report["ratio_resident_to_float32"] > 0
    assert set(report["step_overhead_bytes"]) == {"large", "control"}
    assert all(isinstance(v, int) for v in report["step_overhead_bytes"].values())
    # Hopper shapes: obs 11 twice, act 3, reward, terminal, return-to-go; float32.
    assert report["dataset_float32_bytes"] == 5000 * (11 + 11 + 3 + 1 + 1 + 1) * 4

    runs = report["runs"]
    assert sorted((r["transitions"], r["load"], r["cache_hit"]) for r in runs) == [
        (1000, "first", False),
        (5000, "first", False),
    ]
    assert set(report["ratio_resident_to_float32_by_load"]) == {"first"}
    for r in runs:
        for key in RUN_KEYS:
            assert math.isfinite(r[key]) and r[key] >= 0, (key, r[key])
        assert r["rss_after_imports"] > 0 and r["peak_during_steps"] >= r["rss_before_steps"]
        assert r["losses_finite"] is True
        # The sampler wraps the loaded arrays on the CPU rather than copying them.
        assert r["sampler_shares_host_arrays"] is True
        assert r["network"]["hidden"] == [256, 256, 256]
