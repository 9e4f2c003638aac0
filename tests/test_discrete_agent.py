"""The discrete agent and run: every flag changes the computation, seeds vectorise, resume is exact,
and cql-train runs a tiny discrete Minari set end to end."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_DATASET, run_cli
from data_helpers import make_minari_dataset
from omegaconf import DictConfig, OmegaConf

from cql_runner.checkpoint import load_checkpoint
from cql_runner.config import ConfigError, CQLConfig, DiscreteConfig, NetworkConfig, validate
from cql_runner.data.types import DatasetMeta, OfflineData
from cql_runner.discrete.agent import DiscreteCQLAgent
from cql_runner.discrete.evaluation import epsilon_greedy
from cql_runner.discrete.sampler import DiscreteSampler
from cql_runner.logging import read_jsonl
from cql_runner.run import run
from cql_runner.seeds import seed_state

CARTPOLE = "test/cartpole/tiny-v0"
DISCRETE = [
    "env=cartpole-random",
    f"dataset.id={CARTPOLE}",
    "logger=none",
    "network.hidden=[32,32]",
    "train.steps=60",
    "train.log_every=20",
    "train.checkpoint_every=30",
    "eval.every=30",
    "eval.episodes=2",
    "train.batch_size=16",
    "discrete.target_update_every=10",
    "train.progress=false",
]


@pytest.fixture(scope="module")
def cartpole(minari_root: Path) -> str:
    make_minari_dataset(
        CARTPOLE, env_id="CartPole-v1", n_episodes=6, max_steps=40, ref_min_score=10.0, ref_max_score=500.0
    )
    return CARTPOLE


def _data(n: int = 40, obs_dim: int = 3, n_actions: int = 3) -> OfflineData:
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(n + 1, obs_dim)).astype(np.float32)
    terminals = np.zeros(n, np.float32)
    terminals[[9, 29]] = 1
    return OfflineData(
        observations=obs[:-1],
        actions=rng.integers(n_actions, size=(n, 1)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        next_observations=obs[1:],
        terminals=terminals,
        timeouts=np.zeros(n, np.float32),
        episode_starts=np.array([0, 10, 30]),
        meta=DatasetMeta("synthetic", extra={"n_actions": n_actions}),
    )


def _train(
    seeds: list[int], steps: int = 5, net: dict | None = None, cql: dict | None = None, discrete: dict | None = None
) -> tuple[DiscreteCQLAgent, list[dict[str, torch.Tensor]]]:
    torch.manual_seed(0)
    c = CQLConfig(**{"alpha": 1.0, "lagrange": False, **(cql or {})})
    d = DiscreteConfig(**{"n_quantiles": 5, "target_update_every": 2, **(discrete or {})})
    data = _data()
    agent = DiscreteCQLAgent(3, 3, seeds, NetworkConfig(**{"hidden": [16], "n_critics": 1, **(net or {})}), c, d)
    sampler = DiscreteSampler(data, seeds, "cpu", discount=c.discount, n_step=d.n_step)
    return agent, [agent.update(sampler.sample(8)) for _ in range(steps)]


@pytest.mark.parametrize(
    ("section", "change"),
    [
        ("discrete", {"backbone": "qr_dqn"}),
        ("discrete", {"td_loss": "mse"}),
        ("discrete", {"n_step": 3}),
        ("discrete", {"target_update": "polyak"}),
        ("discrete", {"target_update_every": 3}),
        ("cql", {"alpha": 3.0}),
        ("cql", {"temperature": 0.3}),
        ("cql", {"lagrange": True, "tau": 0.5}),
        ("cql", {"discount": 0.5}),
    ],
)
def test_every_discrete_flag_changes_the_computation(section: str, change: dict) -> None:
    _, base = _train([1], steps=4)
    _, changed = _train([1], steps=4, **{section: change})
    assert not torch.allclose(base[-1]["loss/critic"], changed[-1]["loss/critic"])


def test_quantile_count_and_lagrange_form_change_the_computation() -> None:
    _, a = _train([1], discrete={"backbone": "qr_dqn"})
    _, b = _train([1], discrete={"backbone": "qr_dqn", "n_quantiles": 7})
    assert not torch.allclose(a[-1]["loss/td"], b[-1]["loss/td"])
    lag = {"lagrange": True, "tau": 0.5, "alpha": 3.0}
    _, w = _train([1], cql={**lag, "lagrange_form": "weighted"})
    _, r = _train([1], cql={**lag, "lagrange_form": "raw"})
    assert not torch.allclose(w[-1]["loss/cql"], r[-1]["loss/cql"])


def test_eval_epsilon_changes_actions_and_zero_is_greedy() -> None:
    def greedy(obs: np.ndarray) -> np.ndarray:
        return np.zeros(obs.shape[:2], np.int64)

    obs = np.zeros((2, 50, 3), np.float32)
    rngs = [np.random.default_rng(s) for s in (0, 1)]
    assert (epsilon_greedy(greedy, 0.0, 4, rngs)(obs) == 0).all()
    noisy = epsilon_greedy(greedy, 0.5, 4, rngs)(obs)
    assert 0 < (noisy != 0).mean() < 0.6


def test_seed_vectorised_agent_equals_single_agents() -> None:
    vec, vec_metrics = _train([4, 9], steps=6, discrete={"backbone": "qr_dqn"})
    for k, seed in enumerate([4, 9]):
        single, single_metrics = _train([seed], steps=6, discrete={"backbone": "qr_dqn"})
        state = seed_state(vec, k)
        for name, value in single.checkpoint_state()["modules"].items():
            torch.testing.assert_close(state["modules"][name], value, rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(vec_metrics[-1]["loss/critic"][k], single_metrics[-1]["loss/critic"][0])


def test_conservative_training_lowers_unseen_actions_relative_to_dataset_actions() -> None:
    data = _data()
    taken = torch.as_tensor(data.actions[:, 0], dtype=torch.int64)

    def data_action_margin(alpha: float) -> float:
        agent, _ = _train([0], steps=150, cql={"alpha": alpha, "critic_lr": 3e-3})
        q = agent.q_values(torch.as_tensor(data.observations).unsqueeze(0))[0].detach()
        q_taken = q.gather(-1, taken.unsqueeze(-1)).squeeze(-1)
        return float((q_taken - (q.sum(-1) - q_taken) / 2).mean())

    plain, conservative = data_action_margin(0.0), data_action_margin(5.0)
    assert conservative > plain + 0.3 and conservative > 0.3


def test_validation_names_the_fix(compose_cfg: Callable[..., DictConfig], minari_root: Path) -> None:
    for override, words in [
        ("discrete.backbone=qrdqn", "discrete.backbone"),
        ("discrete.n_step=0", "discrete.n_step"),
        ("network.n_critics=2", "network.n_critics=1"),
        ("train.compile=true", "train.compile"),
        ("discrete.eval_epsilon=2", "discrete.eval_epsilon"),
        ("cql.lagrange_form=mixed", "cql.lagrange_form"),
    ]:
        with pytest.raises(ConfigError, match=words):
            validate(compose_cfg(["env=cartpole-medium", override]))


def test_seed_vectorised_run_and_exact_resume(
    cartpole: str, tmp_path: Path, compose_cfg: Callable[..., DictConfig]
) -> None:
    torch.set_num_threads(1)
    vec = tmp_path / "vec"
    run(compose_cfg([*DISCRETE, "seeds=[2,5]", f"run_dir={vec}"]))
    single = tmp_path / "single"
    run(compose_cfg([*DISCRETE, "seed=5", f"run_dir={single}"]))
    resumed = tmp_path / "resumed"
    run(compose_cfg([*DISCRETE, "seed=5", "train.steps=30", f"run_dir={resumed}"]))
    out = run(compose_cfg([*DISCRETE, "seed=5", f"run_dir={resumed}"]))
    assert out["steps"] == 60
    a = load_checkpoint(single / "checkpoints" / "last.pt")["agent"]["modules"]
    for other in (vec / "seed5", resumed):
        b = load_checkpoint(other / "checkpoints" / "last.pt")["agent"]["modules"]
        for name in a:
            torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=f"{other.name}: {name}")
    rows_a, rows_b = read_jsonl(single / "metrics.jsonl"), read_jsonl(resumed / "metrics.jsonl")
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b]
    assert rows_b[-1]["eval/return"] == pytest.approx(rows_a[-1]["eval/return"])


def test_cql_train_end_to_end_on_a_tiny_discrete_minari_set(cartpole: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = run_cli([*DISCRETE, f"run_dir={run_dir}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = read_jsonl(run_dir / "metrics.jsonl")
    train_rows = [r for r in rows if "loss/critic" in r]
    assert [r["step"] for r in train_rows] == [20, 40, 60]
    for key in ("loss/td", "loss/cql", "cql/gap", "q/data", "q/dataset_mc_return"):
        assert all(key in r for r in train_rows), key
    evals = [r for r in rows if "eval/return" in r]
    assert [r["step"] for r in evals] == [30, 60] and all(r["eval/return"] > 0 for r in evals)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["final_normalized_score"] is not None
    config = OmegaConf.load(run_dir / "config.yaml")
    assert config.action_space == "discrete"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["env=pendulum-medium-replay", f"dataset.id={CARTPOLE}", "dataset.path=null"], "pass action_space=discrete"),
        (["env=cartpole-medium", f"dataset.id={TINY_DATASET}"], "drop action_space=discrete"),
    ],
)
def test_mismatched_action_space_is_one_line_naming_the_fix(
    cartpole: str, tmp_path: Path, args: list[str], words: str
) -> None:
    proc = run_cli([*args, "logger=none", f"run_dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert proc.returncode == 2
    assert words in proc.stderr and "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if "error" in line]) == 1


def test_missing_discrete_dataset_names_the_collect_command() -> None:
    from cql_runner.data.minari_source import collect_command

    assert collect_command("cql_runner/cartpole/medium-v0").startswith("cql-collect env=CartPole-v1 level=medium")
    assert "env=MinAtar/Breakout-v1 max_episode_steps=2000 level=expert" in collect_command(
        "cql_runner/minatar-breakout/expert-v0"
    )
