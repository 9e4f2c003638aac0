"""Build the small dataset that ships inside cql-runner as the default for ``cql-train``.

What it is: Pendulum-v1, level ``medium-replay``, seed 0 — every transition online SAC
(cql-runner's own agent with the conservative term off, [256, 256] networks) collected
before its policy first reached a third of the way from random to expert return. It is
written with ``cql-collect`` into a temporary Minari store and the dataset folder
(``data/main_data.hdf5``, ``data/metadata.json``) is copied to
``src/cql_runner/assets/datasets/pendulum-medium-replay-v0/``, where ``conf/env/
pendulum-medium-replay.yaml`` reads it with ``MinariSource(path=...)``. The metadata records
the reference scores (random and expert mean returns), the eval env spec, the seed and the
code version.

Regenerate (about 10 minutes on 2 CPU cores; the SAC policies are cached, so a rerun with the
same settings only recollects)::

    PYTHONPATH=src python scripts/make_default_dataset.py            # or after pip install -e .
    PYTHONPATH=src python scripts/make_default_dataset.py --sac-steps 20000 --cache /tmp/cache

The same seed and settings reproduce the same arrays bit for bit (on the same torch build).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = REPO / "src" / "cql_runner" / "assets" / "datasets" / "pendulum-medium-replay-v0"
DATASET_ID = "cql_runner/pendulum/medium-replay-v0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sac-steps", type=int, default=20_000)
    parser.add_argument("--eval-every", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=None, help="behaviour-policy cache (default ~/.cache/cql_runner)")
    parser.add_argument("--out", type=Path, default=TARGET)
    args = parser.parse_args()

    from hydra import compose, initialize_config_dir

    from cql_runner.collect import collect, register_configs

    overrides = [
        "env=Pendulum-v1",
        "level=medium-replay",
        f"seed={args.seed}",
        f"dataset_id={DATASET_ID}",
        f"sac.steps={args.sac_steps}",
        "sac.hidden=[256,256]",
        "sac.start_steps=1000",
        f"sac.eval_every={args.eval_every}",
        "sac.eval_episodes=5",
        "ref_episodes=20",
        "collect.steps=50000",
    ]
    if args.cache:
        overrides.append(f"out_dir={args.cache}")
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf" / "cql_collect"), version_base="1.3"):
        cfg = compose(config_name="collect", overrides=overrides)

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as store:
        os.environ["MINARI_DATASETS_PATH"] = store
        collect(cfg)
        built = Path(store) / DATASET_ID
        if args.out.exists():
            shutil.rmtree(args.out)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(built, args.out)
    seconds = time.perf_counter() - start

    meta = json.loads((args.out / "data" / "metadata.json").read_text())
    info = meta["cql_runner"]
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    b = info["behaviour"]
    print(f"copied to {args.out}")
    print(
        f"wall time {seconds / 60:.1f} min | SAC {args.sac_steps} steps, {b['updates_per_second']:.0f} "
        f"updates/s | returns: random {b['random_return']:.1f}, medium {b['medium_return']:.1f} "
        f"(step {b['medium_step']}), expert {b['expert_return']:.1f} (step {b['expert_step']})"
    )
    print(
        f"dataset: {meta['total_episodes']} episodes, {meta['total_steps']} transitions, behaviour mean "
        f"return {info['dataset_mean_return']:.1f}, {size / 2**20:.2f} MiB on disk"
    )


if __name__ == "__main__":
    sys.exit(main())
