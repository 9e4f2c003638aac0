"""Smoke test of scripts/bench.py: a tiny run in a subprocess writes JSON of the documented schema.

d3rlpy is compared with when a peer venv is named by CQL_RUNNER_PEER_VENV (built by
``python -m cql_runner.peers build``; d3rlpy never goes into our venv); without it the bench must
still run ours and say why the peer is missing, so CI passes without the peer.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PEER_VENV = os.environ.get("CQL_RUNNER_PEER_VENV")
HAS_D3RLPY = importlib.util.find_spec("d3rlpy") is not None or bool(PEER_VENV)


def test_bench_smoke_writes_the_json_schema(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "bench.py"),
        "--rounds",
        "1",
        "--steps",
        "2",
        "--hidden",
        "32",
        "32",
        "--warmup",
        "1",
        "--dataset-size",
        "5000",
        "--gemm-reps",
        "2",
        "--seeds",
        "2",
        "--json",
        str(out),
        "--quiet",
    ]
    if PEER_VENV:
        cmd += ["--peer-venv", PEER_VENV]
    elif not HAS_D3RLPY:
        cmd.append("--no-peer")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "steps/s" in proc.stdout

    report = json.loads(out.read_text())
    assert report["schema"] == "cql-runner-bench/1"
    assert set(report["ratios"]) == {"fp32", "bf16"}
    assert report["config"]["hidden"] == [32, 32] and report["config"]["batch"] == 256
    assert report["config"]["n_actions"] == 10
    assert isinstance(report["notes"], list)

    rows = {r["name"]: r for r in report["rows"]}
    for name in (
        "ours_fp32",
        "ours_fp32_sampled",
        "ours_online_utd1_sampled",
        "ours_seeds2_sampled",
        "ours_bf16",
        "gemm_ceiling",
    ):
        assert name in rows, sorted(rows)
    for r in rows.values():
        s = r["steps_per_s"]
        assert 0 < s["min"] <= s["median"] <= s["max"]
        assert len(r["per_round"]) == 1
    assert rows["ours_fp32"]["ratio_vs_ours_fp32"] == 1.0
    assert rows["ours_fp32"]["fraction_of_ceiling"] > 0
    # The vectorised row counts seed-steps: 2 seeds per call.
    assert rows["ours_seeds2_sampled"]["agents"] == 2
    seeds = report["seeds"]
    assert seeds["k"] == 2 and seeds["aggregate_steps_per_s"] == rows["ours_seeds2_sampled"]["steps_per_s"]["median"]
    assert seeds["ratio_vs_single"] > 0
    # The online fine-tuning row (a Hopper-v5 env step + one mixed-batch update), set against the
    # offline sample+update step of the same rounds.
    online = report["online"]
    assert online["env"] == "Hopper-v5" and online["utd"] == 1 and online["offline_ratio"] == 0.5
    assert online["env_steps_per_s"] == rows["ours_online_utd1_sampled"]["steps_per_s"]["median"]
    assert online["ratio_vs_offline"] == pytest.approx(
        rows["ours_online_utd1_sampled"]["per_round"][0] / rows["ours_fp32_sampled"]["per_round"][0]
    )
    assert "env steps/s" in proc.stdout
    # CPU: no graph rows.
    assert report["ratios_sampled"]["cuda_graph"] is None and report["ratios_sampled"]["cuda_graph_compile"] is None
    assert seeds["cuda_graph_ratio_vs_single"] is None and seeds["cuda_graph_aggregate_steps_per_s"] is None

    flops = report["flops"]
    assert flops["per_step"] > 0 and flops["gflop_per_step"] == flops["per_step"] / 1e9
    # The analytic GEMM count agrees with torch's FlopCounterMode over a real update.
    if flops["counted_by_torch"] is not None:
        assert abs(flops["counted_by_torch"] - flops["per_step"]) / flops["per_step"] < 0.02
    assert report["ceiling"]["gflops"]["median"] > 0 and report["ceiling"]["steps_per_s_at_ceiling"] > 0

    if not report["machine"]["bf16_hardware"]:
        assert any("bf16" in n for n in report["notes"])

    if HAS_D3RLPY:
        assert report["peer"]["available"] and report["peer"]["version"] == "2.8.1"
        assert {"d3rlpy_fp32", "d3rlpy_fp32_sampled"} <= set(rows)
        assert report["ratios"]["fp32"] > 0 and report["ratios"]["bf16"] > 0
        assert report["ratios_sampled"]["fp32"] > 0
    else:
        assert not report["peer"]["available"] and report["peer"]["reason"]
        assert report["ratios"]["fp32"] is None and report["ratios"]["bf16"] is None
        assert any("d3rlpy" in n for n in report["notes"])


def test_bench_profile_counts_the_ops_of_a_step(tmp_path: Path) -> None:
    out = tmp_path / "profile.json"
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "bench_profile.py"),
        "--hidden",
        "16",
        "--steps",
        "2",
        "--rounds",
        "1",
        "--dataset-size",
        "2000",
        "--no-compile",
        "--gpu-path",
        "--json",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["schema"] == "cql-runner-bench-profile/1"
    (eager,) = report["variants"]
    assert eager["variant"] == "eager" and len(eager["eager_us_per_step"]) == 1
    # A CQL step dispatches hundreds of kernels; on the GPU path one baddbmm per layer.
    assert report["config"]["network_path"] == "batched"
    assert eager["ops_per_step"] > 100
    assert "baddbmm" in eager["top_ops"] and "addmm" not in eager["top_ops"]
    assert sum(eager["top_ops"].values()) <= eager["ops_per_step"]
    assert "graph_us_per_step" not in eager  # CPU: no graph


def test_a_failing_optional_row_is_dropped_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import bench

    def broken() -> None:
        raise RuntimeError("inductor failed")

    ok = bench.Workload("ok", "ok row", lambda: None)
    optional = bench.Workload("opt", "compiled row", broken, optional=True)
    rows, notes = [ok, optional], []
    args = argparse.Namespace(warmup=1, rounds=2, steps=1)
    bench.run_rounds(rows, args, torch.device("cpu"), lambda _msg: None, notes)
    assert rows == [ok] and len(ok.rates) == 2 and optional.rates == []
    assert notes == ["compiled row dropped: its warm-up failed (RuntimeError: inductor failed)"]
    assert bench.paired_ratio(optional, ok) is None

    required = bench.Workload("req", "required row", broken)
    with pytest.raises(RuntimeError, match="inductor failed"):
        bench.run_rounds([ok, required], args, torch.device("cpu"), lambda _msg: None, [])
