"""A non-editable install carries the configs and the default dataset, and its default run trains."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built without touching the network, and unpacked into a folder."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(REPO), "-w", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("cql_runner-*.whl")
    unpacked = out / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(unpacked)
    return unpacked


def test_wheel_ships_configs_and_default_dataset(wheel_dir: Path) -> None:
    pkg = wheel_dir / "cql_runner"
    assert (pkg / "conf" / "train.yaml").is_file()
    assert (pkg / "conf" / "env" / "hopper-medium.yaml").is_file()
    assert (pkg / "conf" / "cql_collect" / "collect.yaml").is_file()
    data = pkg / "assets" / "datasets" / "pendulum-medium-replay-v0" / "data"
    assert (data / "main_data.hdf5").stat().st_size > 100_000
    assert (data / "metadata.json").is_file()


def test_default_run_works_from_the_installed_wheel(wheel_dir: Path, tmp_path: Path) -> None:
    """The wheel's copy (first on sys.path) composes the default and trains on its own dataset."""
    code = (
        "import sys; from cql_runner.cli import train_main; import cql_runner; "
        "assert cql_runner.__file__.startswith(sys.argv[1]), cql_runner.__file__; "
        "sys.argv = ['cql-train', 'train.steps=20', 'train.batch_size=8', 'eval.every=0', 'eval.episodes=1', "
        "'logger=none', 'hydra.run.dir=out']; train_main()"
    )
    env = {**os.environ, "PYTHONPATH": str(wheel_dir), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(wheel_dir)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "out" / "summary.json").is_file()
