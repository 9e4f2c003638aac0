"""Dict observations: the training data and the evaluator present the same vector layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_helpers import DICT_ENV_ID, make_minari_dataset

from cql_runner.data.minari_source import MinariSource
from cql_runner.rollout import run_episodes


def test_loader_and_evaluator_flatten_dict_observations_identically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    make_minari_dataset("test/dictpoint/tiny-v0", n_episodes=1, max_steps=10, seed=0, dict_obs=True)
    data = MinariSource(id="test/dictpoint/tiny-v0", cache_dir=str(tmp_path / "cache")).load()
    assert data.meta.obs_keys[:3] == ["observation", "achieved_goal", "desired_goal"]

    seen: list[np.ndarray] = []

    def policy(obs: np.ndarray) -> np.ndarray:
        seen.append(obs[0, 0].copy())
        return np.zeros((1, 1, data.act_dim), np.float32)

    # The dataset's episode 0 was reset with seed 0; so is this rollout's only env.
    run_episodes(
        DICT_ENV_ID,
        policy,
        seeds=[0],
        episodes_per_seed=1,
        obs_keys=data.meta.obs_keys,
        action_low=data.meta.action_low,
        action_high=data.meta.action_high,
        max_episode_steps=10,
    )
    np.testing.assert_allclose(seen[0], data.observations[0], rtol=1e-6)
