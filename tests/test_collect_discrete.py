"""cql-collect on CartPole-v1 (Discrete actions) with tiny budgets, then cql-train on the result.

One Double-DQN run (1.2k steps) is trained once per module into a shared behaviour cache; every
level is built from it, as a second invocation for another level would.
"""

from __future__ import annotations

import json
from pathlib import Path

import minari
import numpy as np
import pytest
from conftest import compose_collect, run_cli
from data_helpers import minari_arrays

from cql_runner.collect import collect
from cql_runner.collect.discrete_levels import _load, behaviour_dir
from cql_runner.config import ConfigError
from cql_runner.data.minari_source import MinariSource

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "env=CartPole-v1",
    "dqn.steps=1200",
    "dqn.hidden=[32,32]",
    "dqn.lr=1e-3",
    "dqn.start_steps=100",
    "dqn.eval_every=300",
    "dqn.eval_episodes=2",
    "dqn.target_update_every=100",
    "ref_episodes=2",
    "collect.steps=300",
    "collect.envs=3",
    "progress=false",
]
LEVELS = ("random", "medium", "expert", "medium-replay", "medium-expert")


def make_cfg(*overrides: str):
    return compose_collect([*TINY, *overrides])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("collect_discrete")
    out = root / "cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root / "minari"))
        ids = {level: collect(make_cfg(f"level={level}", f"out_dir={out}")) for level in LEVELS}
        summary = _load(behaviour_dir(make_cfg(f"out_dir={out}"))).summary
        yield ids, summary, out, root / "minari"


def test_every_level_loads_with_discrete_actions_and_reference_scores(built):
    ids, summary, _, _ = built
    assert ids["medium"] == "cql_runner/cartpole/medium-v0"
    for level, dataset_id in ids.items():
        ds = minari.load_dataset(dataset_id)
        assert ds.action_space.n == 2
        assert ds.storage.metadata["ref_min_score"] == pytest.approx(summary["random_return"])
        assert ds.storage.metadata["ref_max_score"] == pytest.approx(summary["expert_return"])
        a = minari_arrays(dataset_id)
        assert set(np.unique(a["actions"])) <= {0, 1}
        n = len(a["rewards"])
        if level != "medium-replay":  # its size is the medium step, checked below
            assert n == (600 if level == "medium-expert" else 300)
        data = MinariSource(id=dataset_id).load()
        assert data.meta.extra["n_actions"] == 2 and data.size == n
    assert summary["expert_return"] > summary["random_return"]


def test_medium_replay_is_the_dqn_buffer_up_to_medium(built):
    ids, summary, _, _ = built
    n = len(minari_arrays(ids["medium-replay"])["rewards"])
    assert n == min(summary["medium_step"], 300)


def test_same_seed_reproduces_identical_minari_arrays(built, tmp_path, monkeypatch):
    ids, _, _, store = built
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(store))
    first = minari_arrays(ids["medium"])
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "again"))
    # A fresh behaviour cache: the DQN is retrained from scratch with the same seed.
    again = collect(make_cfg("level=medium", f"out_dir={tmp_path / 'fresh'}"))
    second = minari_arrays(again)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)


def test_bad_dqn_values_fail_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    for override, words in [
        ("dqn.steps=0", "dqn.steps"),
        ("collect.epsilon=2", "collect.epsilon"),
        ("dqn.epsilon_fraction=0", "dqn.epsilon_fraction"),
    ]:
        with pytest.raises(ConfigError, match=words):
            collect(make_cfg(override))


def test_cql_train_on_the_collected_data(built, tmp_path):
    _, _, _, store = built
    run_dir = tmp_path / "run"
    proc = run_cli(
        [
            "env=cartpole-medium",
            "logger=none",
            "train.steps=100",
            "eval.every=50",
            "eval.episodes=2",
            "train.log_every=50",
            "network.hidden=[32,32]",
            "train.progress=false",
            f"run_dir={run_dir}",
        ],
        cwd=tmp_path,
        env={"MINARI_DATASETS_PATH": str(store)},
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["dataset_id"] == "cql_runner/cartpole/medium-v0"
    assert summary["final_return"] > 0 and summary["final_normalized_score"] is not None
