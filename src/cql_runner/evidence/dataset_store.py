"""The suite's datasets: where the Minari store is, whether a dataset is built, and building it with cql-collect.

A dataset that exists is never rebuilt, so a store filled by an earlier (or a hand-started) build is reused;
the behaviour cache (cql-collect's out_dir) is shared the same way, so medium and medium-replay of one
task train SAC once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from cql_runner.evidence.suite_plan import DatasetSpec, collect_args


def dataset_dir(root: Path, dataset_id: str) -> Path:
    """Where Minari keeps ``dataset_id`` under the store ``root`` (<root>/<namespace>/<name>-v<k>)."""
    return root / dataset_id


def dataset_exists(root: Path, dataset_id: str) -> bool:
    """A complete dataset has its metadata and its data file (cql-collect removes partial writes)."""
    data = dataset_dir(root, dataset_id) / "data"
    return (data / "metadata.json").is_file() and any(data.glob("main_data.*"))


def dataset_info(root: Path, dataset_id: str) -> dict[str, Any]:
    """Size and reference scores of a built dataset, read from its Minari metadata (for RESULTS.md)."""
    meta = json.loads((dataset_dir(root, dataset_id) / "data" / "metadata.json").read_text())
    keep = ("dataset_id", "total_episodes", "total_steps", "ref_min_score", "ref_max_score", "dataset_size")
    return {k: meta.get(k) for k in keep}


def console_script(name: str) -> str:
    """The console script installed next to this interpreter (the venv's), else whatever PATH has."""
    exe = Path(sys.executable).parent / name
    return str(exe) if exe.exists() else name


def subprocess_env(minari_root: Path) -> dict[str, str]:
    """Children see the suite's store, one OpenMP thread (small nets gain nothing from more), no wandb prompts."""
    return {
        **os.environ,
        "MINARI_DATASETS_PATH": str(minari_root),
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "WANDB_SILENT": "true",
    }


def run_logged(cmd: list[str], log_path: Path, env: dict[str, str], cwd: Path) -> int:
    """Run ``cmd`` with stdout and stderr appended to ``log_path``; returns the exit status."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, check=False).returncode


def build_dataset(ds: DatasetSpec, minari_root: Path, behaviour_cache: Path, log_path: Path, cwd: Path) -> int:
    """cql-collect for ``ds`` into ``minari_root``; 0 on success (the id cql-collect derives is ds.dataset_id)."""
    cmd = [console_script("cql-collect"), *collect_args(ds, behaviour_cache)]
    return run_logged(cmd, log_path, subprocess_env(minari_root), cwd)


def behaviour_in_progress(env_id: str) -> str | None:
    """The command line of a running cql-collect for ``env_id`` (Linux /proc), else None.

    Two cql-collect processes on one behaviour cache would train the same SAC twice and race on its
    checkpoints, so the suite leaves a dataset alone while a build of its env started by hand (or by
    another suite) is still running; its checkpoints can be half an hour apart, so file times cannot tell.
    """
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(a.endswith("cql-collect") or a == "cql_runner.collect.cli" for a in args) and f"env={env_id}" in args:
            return " ".join(a for a in args if a)
    return None
