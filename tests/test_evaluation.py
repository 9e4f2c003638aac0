"""normalized_score and the Evaluator: env-id resolution, reference scores, determinism."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from omegaconf import OmegaConf

from cql_runner.config import ConfigError, EnvConfig, EvalConfig
from cql_runner.data.types import DatasetMeta
from cql_runner.envs import EnvError
from cql_runner.evaluation import Evaluator, normalized_score
from cql_runner.rollout import run_episodes

KEYS = {"eval/return", "eval/return_std", "eval/length", "eval/normalized_score", "eval/episodes"}


def pendulum_policy(obs: np.ndarray) -> np.ndarray:
    # Deterministic and observation-dependent: push against the angular velocity.
    return np.clip(-obs[..., 2:3] / 4.0, -1.0, 1.0).astype(np.float32)


def make_evaluator(meta_refs=(None, None), env_refs=(None, None), **cfg) -> Evaluator:
    eval_cfg = EvalConfig(**{"episodes": 2, "max_episode_steps": 30, **cfg})
    meta = DatasetMeta(
        dataset_id="test/pendulum-v0",
        eval_env_id="Pendulum-v1",
        ref_min_score=meta_refs[0],
        ref_max_score=meta_refs[1],
        action_low=np.array([-2.0], np.float32),
        action_high=np.array([2.0], np.float32),
    )
    env_cfg = EnvConfig(name="pendulum", ref_min_score=env_refs[0], ref_max_score=env_refs[1])
    return Evaluator(eval_cfg, meta, env_cfg)


def test_normalized_score_math() -> None:
    assert normalized_score(50.0, 0.0, 200.0) == 25.0
    assert normalized_score(-1000.0, -1000.0, 0.0) == 0.0
    assert normalized_score(0.0, -1000.0, 0.0) == 100.0
    assert normalized_score(300.0, 100.0, 200.0) == 200.0


@pytest.mark.parametrize(("lo", "hi"), [(None, 1.0), (0.0, None), (None, None), (math.nan, 1.0)])
def test_normalized_score_missing_refs(lo, hi) -> None:
    with pytest.raises(
        ValueError,
        match=r"lack reference scores; set env\.ref_min_score and "
        r"env\.ref_max_score$",
    ):
        normalized_score(1.0, lo, hi)


def test_normalized_score_equal_refs() -> None:
    with pytest.raises(ValueError, match="equal"):
        normalized_score(1.0, 5.0, 5.0)


def test_repeat_evaluation_is_identical_and_matches_rollout() -> None:
    with make_evaluator(meta_refs=(-1500.0, 0.0)) as ev:
        first = ev.evaluate(pendulum_policy, [0, 1])
        vec = ev._vec
        second = ev.evaluate(pendulum_policy, [0, 1])
        assert ev._vec is vec  # reused, not rebuilt
        alone = ev.evaluate(pendulum_policy, [1])
    assert first == second
    assert len(first) == 2 and set(first[0]) == KEYS
    assert first[1] == alone[0]
    assert first[0]["eval/episodes"] == 2.0 and first[0]["eval/length"] == 30.0
    # Seeds are seed * 10_000 + seed_offset + e, exactly as a direct rollout.
    direct = run_episodes(
        "Pendulum-v1",
        pendulum_policy,
        [0],
        2,
        None,
        np.array([-2.0]),
        np.array([2.0]),
        max_episode_steps=30,
        seed_offset=100,
    )
    assert first[0]["eval/return"] == pytest.approx(float(direct.returns.mean()), rel=1e-12)
    assert first[0]["eval/return_std"] == pytest.approx(float(direct.returns.std()), rel=1e-12)


def test_seed_offset_changes_the_episodes() -> None:
    with make_evaluator(seed_offset=0) as a, make_evaluator(seed_offset=100) as b:
        assert a.evaluate(pendulum_policy, [0]) != b.evaluate(pendulum_policy, [0])


def test_meta_refs_win_over_env_config(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), make_evaluator(meta_refs=(-1000.0, 0.0), env_refs=(-500.0, 10.0)) as ev:
        m = ev.evaluate(pendulum_policy, [3])[0]
    assert m["eval/normalized_score"] == pytest.approx(100.0 * (m["eval/return"] + 1000.0) / 1000.0)
    assert not caplog.records


def test_env_config_refs_are_the_fallback() -> None:
    with make_evaluator(env_refs=(-500.0, 10.0)) as ev:
        m = ev.evaluate(pendulum_policy, [3])[0]
    assert m["eval/normalized_score"] == pytest.approx(100.0 * (m["eval/return"] + 500.0) / 510.0)


def test_no_refs_gives_nan_and_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="cql_runner.evaluation"):
        ev = make_evaluator()
        results = [ev.evaluate(pendulum_policy, [0, 1]) for _ in range(2)]
        ev.close()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "env.ref_min_score" in warnings[0].getMessage()
    for metrics in results:
        for m in metrics:
            assert math.isnan(m["eval/normalized_score"])
            assert math.isfinite(m["eval/return"])


def test_omegaconf_node_and_explicit_env_id() -> None:
    cfg = OmegaConf.structured(EvalConfig(env_id="Pendulum-v1", episodes=1, max_episode_steps=5))
    meta = DatasetMeta(dataset_id="x", eval_env_id="NotAnEnv-v0", ref_min_score=-1.0, ref_max_score=1.0)
    env_cfg = OmegaConf.structured(EnvConfig(name="pendulum"))
    with Evaluator(cfg, meta, env_cfg) as ev:
        assert ev.env_id == "Pendulum-v1"
        m = ev.evaluate(pendulum_policy, [0])[0]
    assert m["eval/length"] == 5.0


def test_missing_env_id_names_the_override() -> None:
    meta = DatasetMeta(dataset_id="some/dataset-v0")
    with pytest.raises(ConfigError, match=r"eval\.env_id=<Gym id>") as info:
        Evaluator(EvalConfig(), meta, EnvConfig(name="x"))
    assert "\n" not in str(info.value)


def test_bad_env_fails_at_construction() -> None:
    meta = DatasetMeta(dataset_id="x", eval_env_id="Hoper-v5")
    with pytest.raises(EnvError, match="Hopper-v5"):
        Evaluator(EvalConfig(), meta, EnvConfig(name="x"))
    meta = DatasetMeta(dataset_id="x", eval_env_id="Pendulum-v1", action_low=-np.ones(3), action_high=np.ones(3))
    with pytest.raises(ValueError, match="action_low has shape"):
        Evaluator(EvalConfig(), meta, EnvConfig(name="x"))


def test_hopper_evaluation_is_short_with_a_cap() -> None:
    meta = DatasetMeta(
        dataset_id="mujoco/hopper/medium-v0", eval_env_id="Hopper-v5", ref_min_score=-20.272305, ref_max_score=3234.3
    )
    cfg = EvalConfig(episodes=2, max_episode_steps=50)
    with Evaluator(cfg, meta, EnvConfig(name="hopper")) as ev:
        metrics = ev.evaluate(lambda obs: np.zeros((*obs.shape[:2], 3), np.float32), [0, 1])
    for m in metrics:
        assert 0 < m["eval/length"] <= 50
        assert math.isfinite(m["eval/normalized_score"])


def test_the_evaluator_meets_the_protocol_the_trainer_relies_on() -> None:
    from cql_runner.evaluation import PolicyEvaluator

    with make_evaluator() as ev:
        assert isinstance(ev, PolicyEvaluator)

    class NoClose:
        env_id = "Pendulum-v1"

        def evaluate(self, policy, seeds):
            return []

    assert not isinstance(NoClose(), PolicyEvaluator)
