"""Episodes → Minari EpisodeBuffers → a Minari dataset (hdf5 backend) with full metadata.

Minari's ``DataCollector`` needs jax and steps one transition at a time; building the
``EpisodeBuffer``s directly from recorded episodes needs neither. Actions are stored in env
units and observations in the observation space's dtype, as Minari's own datasets are.

Minari 0.5.4 stores ``ref_min_score``/``ref_max_score`` only when ``ref_max_score`` is given
and there is an eval env spec (a lone ``ref_min_score`` is dropped), so both are passed
together with ``eval_env``.
"""

from __future__ import annotations

import functools
import importlib.metadata
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import minari
import numpy as np
from gymnasium.envs.registration import EnvSpec
from minari.data_collector import EpisodeBuffer
from minari.dataset.minari_dataset import parse_dataset_id
from minari.storage.datasets_root_dir import get_dataset_path

from cql_runner.rollout import Episode


class CollectError(RuntimeError):
    """A user-facing cql-collect failure; the message is one line and names the fix."""


@dataclass
class DatasetInfo:
    """Everything recorded in the dataset's metadata besides the episodes."""

    dataset_id: str
    env_spec: EnvSpec
    algorithm_name: str
    description: str
    ref_min_score: float
    ref_max_score: float
    ref_episodes: int
    seed: int
    # Extra JSON-serialisable metadata, stored under the key "cql_runner".
    extra: dict[str, Any] = field(default_factory=dict)


@functools.cache
def code_version() -> str:
    """``cql-runner <version> (git <commit>[, modified])``, as far as it can be found."""
    try:
        version = importlib.metadata.version("cql-runner")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    src = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=src, text=True, capture_output=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", str(src.parent)], cwd=src, text=True, capture_output=True, timeout=5
        ).stdout.strip()
        git = f" (git {commit}{', modified' if dirty else ''})"
    except (OSError, subprocess.SubprocessError):
        git = ""
    return f"cql-runner {version}{git}"


def check_dataset_id(dataset_id: str, overwrite: bool) -> Path:
    """Fail early on a malformed id or an existing dataset (unless ``overwrite``)."""
    try:
        parse_dataset_id(dataset_id)
    except ValueError as exc:
        raise CollectError(
            f"dataset_id {dataset_id!r} is malformed; use "
            "(namespace/)name-v<version>, e.g. cql_runner/pendulum/medium-v0"
        ) from exc
    path = get_dataset_path(dataset_id)
    if path.exists() and not overwrite:
        raise CollectError(
            f"dataset {dataset_id!r} already exists at {path}; pass overwrite=true "
            "to replace it or pick another dataset_id"
        )
    return path


def to_buffers(episodes: Sequence[Episode], spec: EnvSpec) -> list[EpisodeBuffer]:
    env = gym.make(spec)
    obs_dtype, act_dtype = env.observation_space.dtype, env.action_space.dtype
    env.close()
    return [
        EpisodeBuffer(
            id=i,
            seed=int(ep.seed),
            observations=np.asarray(ep.obs, obs_dtype),
            actions=np.asarray(ep.actions, act_dtype),
            rewards=np.asarray(ep.rewards, np.float64),
            terminations=np.asarray(ep.terminations, bool),
            truncations=np.asarray(ep.truncations, bool),
        )
        for i, ep in enumerate(episodes)
    ]


def write_dataset(episodes: Sequence[Episode], info: DatasetInfo, overwrite: bool = False) -> Path:
    """Write ``episodes`` as Minari dataset ``info.dataset_id``; returns its folder.

    A partly written dataset is removed again if writing fails.
    """
    if not episodes:
        raise CollectError("no episodes to write")
    path = check_dataset_id(info.dataset_id, overwrite)
    if path.exists():
        shutil.rmtree(path)
    buffers = to_buffers(episodes, info.env_spec)
    try:
        dataset = minari.create_dataset_from_buffers(
            dataset_id=info.dataset_id,
            buffer=buffers,
            env=info.env_spec,
            eval_env=info.env_spec,
            algorithm_name=info.algorithm_name,
            author=code_version(),
            author_email="n/a",
            code_permalink=code_version(),
            ref_min_score=float(info.ref_min_score),
            ref_max_score=float(info.ref_max_score),
            num_episodes_average_score=int(info.ref_episodes),
            description=info.description,
            data_format="hdf5",
        )
        dataset.storage.update_metadata({"collection_seed": int(info.seed), "cql_runner": info.extra})
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return path
