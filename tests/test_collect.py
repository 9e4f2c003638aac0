"""cql-collect end to end on InvertedPendulum-v5 with tiny budgets.

One SAC run (1.2k steps, [64, 64]; the return goes from about 5 to about 90) is trained once
per module into a shared behaviour cache; every level is then built from it, as a second
invocation for another level would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import minari
import numpy as np
import pytest
import torch
from conftest import compose_collect
from data_helpers import minari_arrays
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from cql_runner.collect import CollectError, cli, collect, default_dataset_id
from cql_runner.collect.behaviour import behaviour_dir, load
from cql_runner.collect.config import SACConfig
from cql_runner.collect.online_sac import train_sac
from cql_runner.collect.policies import episode_seed
from cql_runner.config import ConfigError
from cql_runner.data.minari_source import MinariSource

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "env=InvertedPendulum-v5",
    "sac.steps=1200",
    "sac.hidden=[64,64]",
    "sac.lr=1e-3",
    "sac.start_steps=200",
    "sac.eval_every=300",
    "sac.eval_episodes=3",
    "ref_episodes=3",
    "collect.steps=500",
    "collect.envs=4",
    "progress=false",
]
LEVELS = ("random", "medium", "expert", "medium-replay", "medium-expert")


def make_cfg(*overrides: str):
    return compose_collect([*TINY, *overrides])


def episode_returns(dataset_id: str) -> np.ndarray:
    ds = minari.load_dataset(dataset_id)
    return np.array([ds[i].rewards.sum() for i in range(ds.total_episodes)])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Every level built from one SAC run; yields (ids by level, behaviour summary, out_dir)."""
    root = tmp_path_factory.mktemp("collect")
    out = root / "cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root / "minari"))
        ids = {}
        for level in LEVELS:
            steps = ["collect.steps=100000"] if level == "medium-replay" else []
            ids[level] = collect(make_cfg(f"level={level}", f"out_dir={out}", *steps))
        summary = load(behaviour_dir(make_cfg(f"out_dir={out}"))).summary
        yield ids, summary, out


def test_default_dataset_ids():
    assert default_dataset_id("Hopper-v5", "medium") == "mujoco/hopper/medium-v0"
    assert default_dataset_id("Walker2d-v5", "medium-replay") == "mujoco/walker2d/medium-replay-v0"
    assert default_dataset_id("Pendulum-v1", "expert") == "cql_runner/pendulum/expert-v0"
    assert default_dataset_id("InvertedPendulum-v5", "random") == "cql_runner/invertedpendulum/random-v0"


def test_every_level_loads_with_reference_scores(built):
    ids, summary, _ = built
    assert summary["expert_return"] > summary["random_return"]
    for level, dataset_id in ids.items():
        assert dataset_id == f"cql_runner/invertedpendulum/{level}-v0"
        ds = minari.load_dataset(dataset_id)
        meta = ds.storage.metadata
        assert meta["ref_min_score"] == pytest.approx(summary["random_return"])
        assert meta["ref_max_score"] == pytest.approx(summary["expert_return"])
        assert minari.get_normalized_score(ds, np.array([summary["expert_return"]]))[0] == pytest.approx(1.0)
        assert '"InvertedPendulum-v5"' in meta["eval_env_spec"]
        assert meta["algorithm_name"].startswith("cql-runner")
        assert meta["collection_seed"] == 0
        assert "cql-runner" in meta["description"]
        data = MinariSource(id=dataset_id).load()  # our own loader agrees
        assert data.meta.ref_min_score == pytest.approx(summary["random_return"])
        expected = {"medium-expert": 1000, "medium-replay": summary["medium_step"]}.get(level, 500)
        assert ds.total_steps == expected == data.size


def test_medium_beats_random(built):
    ids, summary, _ = built
    assert episode_returns(ids["medium"]).mean() > 3 * episode_returns(ids["random"]).mean()
    assert summary["medium_step"] <= summary["expert_step"]
    assert summary["medium_return"] >= summary["random_return"]


def test_medium_expert_is_medium_then_expert(built):
    ids, _, _ = built
    both, medium, expert = (
        minari_arrays(ids["medium-expert"]),
        minari_arrays(ids["medium"]),
        minari_arrays(ids["expert"]),
    )
    for key in both:
        np.testing.assert_array_equal(both[key], np.concatenate([medium[key], expert[key]]))


def test_medium_replay_holds_the_early_poorer_episodes(built):
    ids, _, _ = built
    replay = episode_returns(ids["medium-replay"])
    # Every transition SAC saw before the medium snapshot, starting with the warm-up episode.
    assert len(replay) >= 3
    assert replay[:3].mean() < episode_returns(ids["medium"]).mean()
    data = minari_arrays(ids["medium-replay"])
    ends = data["terminations"] | data["truncations"]
    assert ends.sum() == len(replay) and data["terminations"].any()  # one end per episode
    ds = minari.load_dataset(ids["medium-replay"])
    assert ds[0].observations.shape == (len(ds[0].rewards) + 1, 4)
    # In training order: the first episode is SAC's first (warm-up) episode.
    assert [ds[i].id for i in range(3)] == [0, 1, 2]
    assert next(iter(ds.storage.get_episode_metadata([0])))["seed"] == episode_seed(0, "train", 0)


def test_second_invocation_reuses_the_cache_and_reproduces_the_data(built):
    ids, _, out = built
    summary = behaviour_dir(make_cfg(f"out_dir={out}")) / "summary.json"
    stamp = summary.stat().st_mtime_ns
    again = collect(make_cfg("level=medium", f"out_dir={out}", "dataset_id=again/medium-v0"))
    first, second = minari_arrays(ids["medium"]), minari_arrays(again)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    assert summary.stat().st_mtime_ns == stamp  # reused, not retrained
    # Another SAC config is another cache entry.
    assert behaviour_dir(make_cfg(f"out_dir={out}", "sac.lr=3e-4")) != summary.parent


def test_sac_is_reproducible_and_resumes_exactly(tmp_path):
    sac = OmegaConf.structured(
        SACConfig(
            steps=420,
            hidden=[32, 32],
            start_steps=100,
            batch_size=64,
            eval_every=200,
            eval_episodes=1,
            checkpoint_every=200,
        )
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        whole = train_sac("Pendulum-v1", sac, 3, progress=False)
        # Interrupted right after an episode ended (200 steps), then mid-episode.
        for stop in (200, 250):
            part = train_sac("Pendulum-v1", sac, 3, ckpt_dir=tmp_path, progress=False, stop_at=stop)
            assert not part.complete and part.steps == stop
        resumed = train_sac("Pendulum-v1", sac, 3, ckpt_dir=tmp_path, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert resumed.complete and resumed.steps == 420
    a, b = whole.replay.state(), resumed.replay.state()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert [(s.step, s.eval_return) for s in whole.snapshots] == [(s.step, s.eval_return) for s in resumed.snapshots]
    for x, y in zip(whole.snapshots, resumed.snapshots):
        for key in x.actor:
            assert torch.equal(x.actor[key], y.actor[key])


def test_random_with_given_ref_max_needs_no_sac(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "m"))
    dataset_id = collect(make_cfg("level=random", "ref_max_score=-100", f"out_dir={tmp_path / 'c'}"))
    assert not (tmp_path / "c").exists()
    meta = minari.load_dataset(dataset_id).storage.metadata
    assert meta["ref_max_score"] == -100.0 and 0 < meta["ref_min_score"] < 30


def test_bad_values_fail_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    for override, words in (
        ("collect.steps=0", "collect.steps must be >= 1"),
        ("level=super", "level must be one of"),
        ("medium_fraction=1.5", "medium_fraction"),
        ("dataset_id='bad id'", "malformed"),
    ):
        with pytest.raises((ConfigError, CollectError), match=words):
            collect(make_cfg("level=random", "ref_max_score=0", override))
    collect(make_cfg("level=random", "ref_max_score=0", "collect.steps=50"))
    with pytest.raises(CollectError, match="already exists"):
        collect(make_cfg("level=random", "ref_max_score=0", "collect.steps=50"))
    collect(make_cfg("level=random", "ref_max_score=0", "collect.steps=60", "overwrite=true"))
    assert minari.load_dataset("cql_runner/invertedpendulum/random-v0").total_steps == 60
    with pytest.raises(ConfigCompositionException, match="collect_stepz"):
        make_cfg("collect_stepz=5")  # typos fail at composition


def _cli(*args: str, store: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "MINARI_DATASETS_PATH": str(store),
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "cql_runner.collect.cli", *args],
        cwd=store.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_end_to_end(tmp_path):
    proc = _cli(
        "env=Pendulum-v1",
        "level=random",
        "ref_max_score=-150",
        "collect.steps=400",
        "ref_episodes=2",
        "dataset_id=e2e/pendulum-random-v0",
        store=tmp_path / "m",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "dataset: e2e/pendulum-random-v0"
    assert list(tmp_path.iterdir()) == [tmp_path / "m"]  # no Hydra run dirs left behind


@pytest.mark.parametrize(
    "override, words",
    [("levl=medium", "unknown key 'levl'; did you mean level?"), ("sac.step=10", "did you mean sac.steps?")],
)
def test_cli_names_the_likely_key_for_a_typo(tmp_path, monkeypatch, capsys, override, words):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["cql-collect", "env=Pendulum-v1", override])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cql-collect: error:") and words in lines[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "env_id, words", [("Blackjack-v1", "needs a Box observation space"), ("NoSuchEnv-v0", "unknown environment id")]
)
def test_cli_rejects_bad_envs(tmp_path, monkeypatch, capsys, env_id, words):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["cql-collect", f"env={env_id}", "level=random"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cql-collect: error:") and words in lines[0]
    assert list(tmp_path.iterdir()) == []
