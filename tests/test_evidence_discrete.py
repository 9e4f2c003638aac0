"""Discrete cells of the evidence suite: the plan and its command lines, discrete BC, the discrete value
check on a tiny agent, and a tiny CartPole suite end to end through `cql-evidence run`."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from omegaconf import DictConfig, OmegaConf

from cql_runner.config import ConfigError, CQLConfig, DiscreteConfig, NetworkConfig, validate
from cql_runner.data.types import DatasetMeta, OfflineData
from cql_runner.discrete.agent import DiscreteCQLAgent
from cql_runner.discrete.sampler import DiscreteSampler
from cql_runner.evidence.discrete_cells import (
    DISCRETE_METHODS,
    behaviour_words,
    logsumexp_words,
    network_words,
    not_applicable,
    page_title,
)
from cql_runner.evidence.results_page import budget_lines
from cql_runner.evidence.suite_plan import METHODS, collect_args, make_plan, seed_dirs, train_args
from cql_runner.evidence.value_check import discounted_return
from cql_runner.evidence.value_check_discrete import check_discrete_run


# ----- the plan and its command lines -------------------------------------------------------------
def test_discrete_plan_builds_cartpole_and_minatar_with_the_dqn_and_trains_three_methods(tmp_path: Path) -> None:
    plan = make_plan("discrete")
    cartpole, breakout = plan.datasets
    assert (cartpole.key, cartpole.env_id, cartpole.dataset_id) == (
        "cartpole-medium",
        "CartPole-v1",
        "cql_runner/cartpole/medium-v0",
    )
    assert (breakout.key, breakout.env_id, breakout.dataset_id) == (
        "minatar-breakout-medium",
        "MinAtar/Breakout-v1",
        "cql_runner/minatar-breakout/medium-v0",
    )
    assert [m.name for m in plan.methods] == ["cql-discrete", "ddqn", "bc"] and plan.seeds == (0, 1, 2)
    args = collect_args(breakout, tmp_path / "beh")
    assert f"dqn.steps={breakout.sac_steps}" in args and not any(a.startswith("sac.") for a in args)
    assert "max_episode_steps=2000" in args and f"out_dir={tmp_path / 'beh'}" in args
    assert "env=MinAtar/Breakout-v1" in args and "level=medium" in args
    by_name = {m.name: m for m in plan.methods}
    ddqn = train_args(plan, cartpole, by_name["ddqn"], tmp_path)
    assert ddqn[0] == "env=cartpole-medium" and "cql.alpha=0" in ddqn and "cql.lagrange=false" in ddqn
    assert "seeds=[0,1,2]" in ddqn and "train.batch_size=64" in ddqn and "network.hidden=[256,256]" in ddqn
    cql = train_args(plan, breakout, by_name["cql-discrete"], tmp_path)
    assert cql[0] == "env=minatar-breakout-medium" and not any(a.startswith(("cql=", "cql.alpha")) for a in cql)
    assert "cql=bc" in train_args(plan, cartpole, by_name["bc"], tmp_path)


def test_methods_that_cannot_act_in_a_datasets_action_space_are_skipped_or_refused() -> None:
    plan = make_plan("discrete")
    sac = next(m for m in METHODS if m.name == "sac")
    why = not_applicable(sac, plan.datasets[0])
    assert why is not None and "sac" in why and "discrete" in why and "cql-discrete" in why
    assert not_applicable(DISCRETE_METHODS[2], plan.datasets[0]) is None  # bc fits both
    hopper = make_plan("default").datasets[0]
    assert not_applicable(DISCRETE_METHODS[0], hopper) is not None
    with pytest.raises(ValueError, match="sac cannot train on the plan's discrete-action"):
        make_plan("discrete", methods=["sac"])
    with pytest.raises(ValueError, match="ddqn cannot train on the plan's continuous-action"):
        make_plan("default", methods=["ddqn"])
    assert [m.name for m in make_plan("discrete", methods=["bc", "ddqn"]).methods] == ["bc", "ddqn"]


def test_the_page_names_the_dqn_behaviour_and_one_q_network_for_discrete_plans() -> None:
    plan = make_plan("discrete").budget_dict()
    datasets = {"cartpole-medium": {"action_space": "discrete", "behaviour": "DQN", "sac_steps": 30000}}
    md = "\n".join(budget_lines(plan, datasets, {}))
    assert "(one Q-network per seed)" in md and "DQN behaviour policy" in md and "| DQN 30000 |" in md
    assert "SAC" not in md and "actor and 2 critics" not in md
    assert network_words(make_plan("default").budget_dict()) == "actor and 2 critics"
    assert behaviour_words({"h": {}, "c": {"action_space": "discrete"}}) == "SAC or DQN behaviour policy"
    # The logsumexp is exact on discrete plans, sampled with N actions on continuous ones.
    assert "CQL logsumexp exact over all actions" in md and "CQL N =" not in md
    assert logsumexp_words(make_plan("default").budget_dict()) == "CQL N = 10"


def test_page_titles_name_the_comparison_each_plan_makes() -> None:
    assert page_title(make_plan("default").budget_dict()) == "Evidence: CQL against offline SAC and behaviour cloning"
    assert page_title(make_plan("discrete").budget_dict()).startswith("Evidence: discrete CQL against offline Double")
    assert page_title(make_plan("finetune").budget_dict()).startswith("Evidence: offline-to-online fine-tuning")


# ----- discrete BC ----------------------------------------------------------------------------------
def _data(n: int = 60, obs_dim: int = 3, n_actions: int = 3) -> OfflineData:
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(n + 1, obs_dim)).astype(np.float32)
    # The behaviour policy: action = argmax of the first n_actions observation entries (learnable).
    actions = obs[:-1, :n_actions].argmax(-1)
    return OfflineData(
        observations=obs[:-1],
        actions=actions[:, None].astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        next_observations=obs[1:],
        terminals=np.zeros(n, np.float32),
        timeouts=np.zeros(n, np.float32),
        episode_starts=np.array([0, 30]),
        meta=DatasetMeta("synthetic", extra={"n_actions": n_actions}),
    )


def test_cql_bc_trains_the_cross_entropy_of_the_dataset_actions_and_acts_greedily() -> None:
    torch.manual_seed(0)
    data = _data()
    agent = DiscreteCQLAgent(
        3, 3, [0], NetworkConfig(hidden=[32], n_critics=1), CQLConfig(bc_steps=10**9, critic_lr=3e-3), DiscreteConfig()
    )
    sampler = DiscreteSampler(data, [0], "cpu", discount=0.99, n_step=1)
    batch = sampler.sample(16)
    _, metrics = agent.compute_losses(batch)
    logits = agent.q_values(batch.obs)[0]
    brute = -torch.log_softmax(logits, -1)[torch.arange(16), batch.actions[0]].mean()
    assert set(metrics) == {"loss/bc", "bc/accuracy"}
    assert metrics["loss/bc"][0].item() == pytest.approx(brute.item(), rel=1e-5)
    for _ in range(300):
        last = agent.update(sampler.sample(32))
    assert last["loss/bc"][0] < metrics["loss/bc"][0]
    obs = data.observations[None]
    accuracy = (agent.act(obs)[0] == data.actions[:, 0]).mean()
    assert accuracy > 0.8  # greedy in the logits reproduces the behaviour policy


def test_a_bc_warm_start_is_refused_for_discrete_runs(compose_cfg: Callable[..., DictConfig], minari_root) -> None:
    validate(compose_cfg(["env=cartpole-medium", "cql=bc"]))  # BC for the whole run is fine
    with pytest.raises(ConfigError, match="behaviour cloning is the whole run"):
        validate(compose_cfg(["env=cartpole-medium", "cql.bc_steps=100", "train.steps=1000"]))


# ----- the discrete value check -----------------------------------------------------------------------
def _cfg(epsilon: float) -> DictConfig:
    return OmegaConf.create(
        {"eval": {"env_id": "CartPole-v1", "max_episode_steps": 60}, "discrete": {"eval_epsilon": epsilon}}
    )


def _cartpole_data() -> OfflineData:
    rng = np.random.default_rng(1)
    obs = rng.normal(scale=0.05, size=(20, 4)).astype(np.float32)
    return OfflineData(
        observations=obs,
        actions=rng.integers(2, size=(20, 1)).astype(np.float32),
        rewards=np.ones(20, np.float32),
        next_observations=obs,
        terminals=np.zeros(20, np.float32),
        timeouts=np.zeros(20, np.float32),
        episode_starts=np.array([0, 5, 12]),
        meta=DatasetMeta("synthetic-cartpole", eval_env_id="CartPole-v1", extra={"n_actions": 2}),
    )


@pytest.mark.parametrize("bc", [False, True])
def test_discrete_value_check_compares_q_of_the_first_action_with_the_discounted_return(bc: bool) -> None:
    torch.manual_seed(0)
    cql = CQLConfig(bc_steps=10**9 if bc else 0)
    agent = DiscreteCQLAgent(4, 2, [3], NetworkConfig(hidden=[16], n_critics=1), cql, DiscreteConfig())
    data = _cartpole_data()
    rec = check_discrete_run(agent, _cfg(0.0), data, 3, 0.9, 2.0, 0.5)
    # CartPole pays 1 per step: the discounted return of L steps of 2·1 + 0.5 is Σ_t 0.9^t · 2.5.
    lengths = rec["episode_length"]
    assert rec["n_episodes"] == 3 and rec["gamma"] == 0.9 and 1 <= lengths <= 60
    assert rec["undiscounted_return"] == pytest.approx(lengths)
    assert rec["mc_return_s0"] <= discounted_return(np.full(60, 2.5), 0.9) + 1e-9
    assert rec["mc_return_s0"] >= 2.5
    assert rec["dataset_s0_rollouts"] == 0 and rec["n_dataset_episodes"] == 3
    if bc:  # logits are not values: no Q̂ to compare
        assert rec["q_function"] is False and rec["q_hat_s0"] is None and rec["underestimates"] is None
        return
    # Brute force: the same reset states and greedy first actions, Q read off the network.
    import gymnasium as gym

    from cql_runner.evidence.value_check import VALUE_SEED_OFFSET
    from cql_runner.rollout import env_seeds

    q_brute = []
    for s in env_seeds([3], 3, VALUE_SEED_OFFSET):
        env = gym.make("CartPole-v1")
        s0, _ = env.reset(seed=s)
        x = torch.as_tensor(s0, dtype=torch.float32)[None, None]
        with torch.no_grad():
            q_brute.append(float(agent.q_values(x)[0, 0].max()))
        env.close()
    assert rec["q_hat_s0"] == pytest.approx(np.mean(q_brute), rel=1e-5)
    assert rec["q_hat_s0_mean_critics"] == rec["q_hat_s0"]
    assert rec["q_hat_minus_mc"] == pytest.approx(rec["q_hat_s0"] - rec["mc_return_s0"])
    assert rec["underestimates"] == (rec["q_hat_s0"] < rec["mc_return_s0"])
    starts = data.observations[data.episode_starts]
    with torch.no_grad():
        greedy = agent.q_values(torch.as_tensor(starts)[None])[0].max(-1).values.mean().item()
    assert rec["q_hat_dataset_s0"] == pytest.approx(greedy, rel=1e-5)


# ----- a tiny CartPole suite end to end -----------------------------------------------------------------
@pytest.mark.slow
def test_tiny_discrete_suite_end_to_end(tmp_path: Path) -> None:
    out, docs = tmp_path / "suite", tmp_path / "docs"
    proc = run_cli(
        ["run", str(out), "--budget", "tiny-discrete", "--docs", str(docs), "--jobs", "2"],
        cwd=tmp_path,
        timeout=600,
        script="cql-evidence",
        env={"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    plan = make_plan("tiny-discrete")
    ds = plan.datasets[0]
    assert (out / "minari" / ds.dataset_id / "data" / "metadata.json").is_file()
    for method in plan.methods:
        for d in seed_dirs(plan, out / "runs" / ds.key / method.name):
            check = json.loads((d / "value_check.json").read_text())
            assert check["action_space"] == "discrete" and check["step"] == plan.train_steps
            assert math.isfinite(check["mc_return_s0"]) and check["mc_return_s0"] > 0
            if method.name == "bc":
                assert check["q_hat_s0"] is None
            else:
                assert math.isfinite(check["q_hat_s0"]) and math.isfinite(check["q_hat_dataset_s0"])
    md = (docs / "RESULTS.md").read_text()
    assert md.startswith("# Evidence: discrete CQL against offline Double DQN and behaviour cloning")
    assert "| cql-discrete | the dataset's preset" in md and "Discrete agents (one Q-network per seed" in md
    assert "DQN behaviour policy" in md and "one Q-network per seed" in md
    assert "SAC behaviour" not in md and "actor and 2 critics" not in md
    for method in plan.methods:
        assert f"| {ds.key} | {method.name} | 1 |" in md
    assert "Estimated vs true value" in md and f"| {ds.key} | ddqn |" in md
    assert (docs / "evidence" / "value_check.png").stat().st_size > 0
    datasets = json.loads((out / "datasets.json").read_text())
    assert datasets[ds.key]["behaviour"] == "DQN" and datasets[ds.key]["action_space"] == "discrete"


def test_every_cell_of_the_discrete_plan_composes_and_validates(
    compose_cfg: Callable[..., DictConfig], minari_root, tmp_path: Path
) -> None:
    plan = make_plan("discrete")
    for ds in plan.datasets:
        for method in plan.methods:
            args = [a for a in train_args(plan, ds, method, tmp_path) if not a.startswith("hydra.")]
            cfg = compose_cfg(args)
            validate(cfg)
            assert cfg.action_space == "discrete" and cfg.train.steps == plan.train_steps, (ds.key, method.name)
            assert cfg.dataset.id == ds.dataset_id and cfg.eval.env_id == ds.env_id
            if method.name == "ddqn":
                assert cfg.cql.alpha == 0 and not cfg.cql.lagrange
            elif method.name == "bc":
                assert cfg.cql.bc_steps >= cfg.train.steps
            else:
                assert cfg.cql.alpha == 1.0 and cfg.cql.bc_steps == 0
