"""The evidence suite (`cql-evidence`): value-check math, command lines, and the tiny plan end to end.

The end-to-end test is what CI runs so the suite cannot rot: it builds a tiny InvertedDoublePendulum dataset
with cql-collect, trains the four methods for a few hundred steps, checks the lower-bound numbers and
RESULTS.md, and then checks that a second invocation reruns nothing.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli

from cql_runner.config import CQLConfig, NetworkConfig
from cql_runner.cql.agent import CQLAgent
from cql_runner.evidence.gather_runs import Cell, quarter_change
from cql_runner.evidence.mujoco_states import restore
from cql_runner.evidence.results_reading import beyond_reference
from cql_runner.evidence.run_suite import parse_args, plan_from_args
from cql_runner.evidence.suite_plan import METHODS, make_plan, seed_dirs, train_args
from cql_runner.evidence.value_check import discounted_return, q_estimates, transform_rewards


# ----- the value-check math ------------------------------------------------------------------
def test_discounted_return_of_a_known_sequence():
    assert discounted_return([1.0, 1.0, 1.0], 0.5) == pytest.approx(1.75)
    assert discounted_return([0.0, 0.0, 8.0], 0.5) == pytest.approx(2.0)
    assert discounted_return([], 0.99) == 0.0
    rewards = np.arange(5, dtype=float)
    assert discounted_return(rewards, 0.9) == pytest.approx(sum(0.9**t * r for t, r in enumerate(rewards)))


def test_reward_transform_matches_training_units():
    r = np.array([1.0, -2.0])
    assert np.allclose(transform_rewards(r, 10.0, -5.0), [5.0, -25.0])
    assert discounted_return(transform_rewards(r, 1.0, 0.0), 0.5) == pytest.approx(0.0)


def test_q_estimates_are_min_and_mean_over_critics_at_the_policy_action():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    mean, std = rng.normal(size=3).astype(np.float32), rng.uniform(0.5, 2.0, size=3).astype(np.float32)
    agent = CQLAgent(3, 2, [0], NetworkConfig(hidden=[8, 8]), CQLConfig(), "cpu", obs_mean=mean, obs_std=std)
    obs = rng.normal(size=(5, 3)).astype(np.float32)
    q_min, q_mean = q_estimates(agent, obs)
    actions = agent.act(obs[None])
    assert np.allclose(q_min, agent.q_value(obs[None], actions)[0], atol=1e-6)  # the actor's convention
    with torch.no_grad():
        x = (torch.as_tensor(obs) - torch.as_tensor(mean)) / torch.as_tensor(std)
        per_critic = agent.critic(x[None], torch.as_tensor(actions)).numpy()[0]  # (n_critics, M)
    assert np.allclose(q_min, per_critic.min(axis=0), atol=1e-6)
    assert np.allclose(q_mean, per_critic.mean(axis=0), atol=1e-6)
    assert q_min.shape == (5,) and np.all(q_min <= q_mean + 1e-6)


@pytest.mark.parametrize("env_id", ["Hopper-v5", "InvertedDoublePendulum-v5"])
def test_a_dataset_state_is_restored_from_its_observation(env_id):
    """After restoring, the env observes the same thing and continues exactly as the original would."""
    import gymnasium as gym

    src, dst = gym.make(env_id), gym.make(env_id)
    obs, _ = src.reset(seed=1)
    rng = np.random.default_rng(0)
    for _ in range(3):
        obs, *_ = src.step(rng.uniform(-0.5, 0.5, src.action_space.shape))
    dst.reset(seed=2)
    assert restore(dst, env_id, obs)
    action = rng.uniform(-0.5, 0.5, src.action_space.shape).astype(np.float32)
    a, b = src.step(action), dst.step(action)
    assert np.allclose(a[0], b[0], atol=1e-6) and a[1] == pytest.approx(b[1], abs=1e-6) and a[2] == b[2]
    assert not restore(dst, "Pendulum-v1", obs)


# ----- the plan and its command lines ----------------------------------------------------------
def test_quarter_change_compares_the_last_two_quarters_of_the_seed_mean():
    from cql_runner.report.collect_runs import Run

    def run(values):
        return Run(
            Path("."), {}, [{"step": 100 * (i + 1), "q/data": v} for i, v in enumerate(values)], None, "completed"
        )

    # Steps 100..800: the third quarter is steps 500-600, the last 700-800; two seeds averaged.
    runs = [run([0, 0, 0, 0, 4, 4, 8, 8]), run([0, 0, 0, 0, 6, 6, 10, 10])]
    assert quarter_change(runs, "q/data") == (9.0, 5.0)
    assert quarter_change(runs, "missing") is None
    assert quarter_change([run([1.0])], "q/data") is None  # one point: nothing to compare
    sparse = Run(Path("."), {}, [{"step": 100, "q/data": 1.0}, {"step": 200, "q/data": 3.0}], None, "completed")
    assert quarter_change([sparse], "q/data") == (3.0, 1.0)  # empty third quarter: the point before


def test_default_plan_trains_every_method_on_four_datasets_with_three_seeds(tmp_path):
    plan = make_plan("default")
    assert {d.key for d in plan.datasets} == {
        "hopper-medium",
        "hopper-medium-replay",
        "inverteddoublependulum-medium",
        "inverteddoublependulum-medium-replay",
    }
    assert [m.name for m in plan.methods] == ["cql-lagrange", "cql-fixed", "sac", "bc"]
    assert len(plan.seeds) >= 3
    hopper = plan.datasets[0]
    assert hopper.dataset_id == "mujoco/hopper/medium-v0" and hopper.env_config == "hopper-medium"
    args = train_args(plan, hopper, METHODS[2], tmp_path / "run")
    assert "cql=sac" in args and "seeds=[0,1,2]" in args and "logger=none" in args
    assert f"run_dir={tmp_path / 'run'}" in args
    assert seed_dirs(plan, tmp_path) == [tmp_path / f"seed{s}" for s in plan.seeds]
    idp = plan.datasets[2]
    idp_args = train_args(plan, idp, METHODS[0], tmp_path)
    assert f"dataset.id={idp.dataset_id}" in idp_args and "eval.env_id=InvertedDoublePendulum-v5" in idp_args


def test_plan_overrides_apply_and_unknown_names_fail():
    plan = make_plan(
        "default",
        sac_steps=10,
        collect_steps=20,
        train_steps=7,
        seeds=(4, 5, 6),
        methods=["bc"],
        datasets=["hopper-medium"],
    )
    assert [(d.sac_steps, d.collect_steps) for d in plan.datasets] == [(10, 20)]
    assert plan.train_steps == 7 and plan.seeds == (4, 5, 6) and [m.name for m in plan.methods] == ["bc"]
    with pytest.raises(ValueError, match="unknown methods"):
        make_plan("tiny", methods=["dqn"])
    # Extra cql-train overrides are appended to the plan's own and reach every command line.
    gpu = make_plan("gpu", extra_train=("cql.alpha=20",))
    assert gpu.extra_train == ("train.bf16=true", "cql.alpha=20")
    args = train_args(gpu, gpu.datasets[0], gpu.methods[1], Path("/tmp/x"))
    assert args.index("cql.alpha=20") > args.index("cql=fixed")  # after the method's group: it wins


def test_run_suite_rejects_a_malformed_train_override():
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        plan_from_args(parse_args(["/tmp/x", "--train-override", "cql.alpha"]))
    plan = plan_from_args(parse_args(["/tmp/x", "--train-override", "cql.alpha=20", "--train-override", "cql.tau=2"]))
    assert plan.extra_train == ("cql.alpha=20", "cql.tau=2")


# ----- the tiny suite end to end ----------------------------------------------------------------
def _suite(out: Path, docs: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a user runs it, from a directory that is not the repository."""
    return run_cli(
        ["run", str(out), "--budget", "tiny", "--docs", str(docs), *extra],
        cwd=out.parent,
        timeout=300,
        script="cql-evidence",
        env={"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"},
    )


def test_cql_evidence_lists_its_commands_and_rejects_an_unknown_one(tmp_path):
    listed = run_cli(["--help"], cwd=tmp_path, script="cql-evidence")
    assert listed.returncode == 0 and all(c in listed.stdout for c in ("run", "results", "value-check"))
    assert "--minari-root" in run_cli(["run", "--help"], cwd=tmp_path, script="cql-evidence").stdout
    assert "--out" in run_cli(["results", "--help"], cwd=tmp_path, script="cql-evidence").stdout
    bad = run_cli(["rnu"], cwd=tmp_path, script="cql-evidence")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "'rnu'" in bad.stderr


def test_scores_above_the_expert_reference_are_explained_not_hidden():
    from cql_runner.report.collect_runs import SCORE_KEY, Run

    def cell(method, scores):
        runs = [
            Run(Path("."), {"seed": i}, [{"step": 1000, SCORE_KEY: s}], None, "completed") for i, s in enumerate(scores)
        ]
        return Cell("idp-medium-replay", method, runs)

    cells = {"idp-medium-replay": {"sac": cell("sac", [1575.0, 1576.0]), "bc": cell("bc", [25.0, 26.0])}}
    (line,) = beyond_reference(cells)
    assert "idp-medium-replay/sac (1575.5 ± 0.7)" in line and "/bc" not in line
    assert beyond_reference({"idp-medium-replay": {"bc": cells["idp-medium-replay"]["bc"]}}) == []


def test_results_page_reports_iqm_with_intervals_beside_mean_and_std():
    from rliable import metrics

    from cql_runner.evidence.peer_parity import parity_rows
    from cql_runner.evidence.results_page import results_json, score_lines
    from cql_runner.report.collect_runs import SCORE_KEY, Run

    def cell(dataset, method, scores):
        runs = [
            Run(Path("."), {"seed": i}, [{"step": 1000, SCORE_KEY: s}], None, "completed") for i, s in enumerate(scores)
        ]
        return Cell(dataset, method, runs)

    cells = [
        cell("hopper-medium", "cql-lagrange", [40.0, 50.0, 60.0, 90.0]),
        cell("hopper-medium", "sac", [10.0, 20.0, 30.0, 40.0]),
        cell("walker2d-medium", "cql-lagrange", [70.0, 71.0, 72.0, 73.0]),
        cell("walker2d-medium", "sac", [5.0]),
        cell("walker2d-medium", "bc", []),
    ]
    md = "\n".join(score_lines(cells))
    # IQM of 40, 50, 60, 90 drops 40 and 90: 55; its interval follows it.
    assert "| hopper-medium | cql-lagrange | 4 | 60.0 ± 21.6 | 55.0 [" in md
    assert "| walker2d-medium | sac | 1 | 5.0 ± 0.0 | 5.0 (n = 1, no interval) |" in md
    assert "### Over all datasets" in md
    # cql-lagrange over both datasets: 4 seeds × 2 datasets, IQM of all 8 scores.
    iqm = metrics.aggregate_iqm(np.array([[40.0, 70.0], [50.0, 71.0], [60.0, 72.0], [90.0, 73.0]]))
    assert "| cql-lagrange | 4 × 2 | 65.8 [" in md and f"| {iqm:.1f} [" in md  # mean of the task means first
    assert "| P(cql-lagrange > sac) | 1.00 (n = 1, no interval) |" in md  # sac has 1 seed on walker2d
    results = results_json(cells, parity_rows(cells))
    final = results["hopper-medium/cql-lagrange"]["final_normalized_score"]
    assert final["scores"] == [40.0, 50.0, 60.0, 90.0] and final["iqm"] == 55.0
    assert final["iqm_ci"][0] <= 55.0 <= final["iqm_ci"][1]
    assert results["walker2d-medium/sac"]["final_normalized_score"]["iqm_ci"] is None


def test_tiny_suite_end_to_end_and_resumes_without_rerunning(tmp_path):
    out, docs = tmp_path / "suite", tmp_path / "docs"
    first = _suite(out, docs, "--jobs", "2")  # two one-thread trainings at once: the parallel path, and faster
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    plan = make_plan("tiny")
    ds = plan.datasets[0]
    assert (out / "minari" / ds.dataset_id / "data" / "metadata.json").is_file()

    stamps = {}
    for method in plan.methods:
        for d in seed_dirs(plan, out / "runs" / ds.key / method.name):
            check = json.loads((d / "value_check.json").read_text())
            assert check["dataset_s0_rollouts"] == plan.value_episodes  # IDP states can be rebuilt
            for key in (
                "q_hat_s0",
                "mc_return_s0",
                "q_hat_dataset_s0",
                "gamma",
                "mc_return_dataset_s0",
                "q_hat_dataset_s0_matched",
            ):
                assert math.isfinite(check[key]), (method.name, key, check[key])
            assert check["n_episodes"] == plan.value_episodes and check["gamma"] == pytest.approx(0.99)
            assert check["step"] == plan.train_steps
            stamps[d] = [(d / f).stat().st_mtime_ns for f in ("summary.json", "metrics.jsonl", "value_check.json")]

    md = (docs / "RESULTS.md").read_text()
    for method in plan.methods:
        assert f"| {ds.key} | {method.name} | 1 |" in md  # a score row per method
    assert "Estimated vs true value" in md and "Q̂ < MC" in md and "nan" not in md.lower()
    assert "Have the curves flattened?" in md and "- Flatness: from the third to the last quarter" in md
    assert (docs / "evidence" / "curves.png").stat().st_size > 0
    assert (docs / "evidence" / "q_values.png").stat().st_size > 0
    assert (docs / "evidence" / "value_check.png").stat().st_size > 0
    results = json.loads((docs / "evidence" / "results.json").read_text())
    assert all(math.isfinite(r["final_normalized_score"]["mean"]) for r in results.values())

    second = _suite(out, docs)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "not rebuilding" in second.stdout and second.stdout.count("skipping") == len(plan.methods)
    for d, before in stamps.items():
        assert [(d / f).stat().st_mtime_ns for f in ("summary.json", "metrics.jsonl", "value_check.json")] == before
    timing = json.loads((out / "timing.json").read_text())
    assert len(timing["invocations"]) == 2 and timing["total_s"] > 0


def test_the_d3rlpy_equivalent_method_composes_to_the_readme_conversion(compose_cfg) -> None:
    """Parity cell (b): `cql-as-d3rlpy` is d3rlpy 2.8.1's CQL defaults in our keys, and they compose."""
    plan = make_plan("default", methods=["cql-as-d3rlpy"], datasets=["hopper-medium"])
    method = plan.methods[0]
    cfg = compose_cfg(["env=hopper-medium", *method.overrides])
    c = cfg.cql
    assert (c.alpha, c.lagrange, c.lagrange_form, c.tau) == (2.5, True, "raw", 10)
    assert (c.alpha_lr, c.alpha_prime_lr, c.policy_lr, c.critic_lr) == (1e-4, 1e-4, 1e-4, 3e-4)
    assert (c.entropy_alpha_init, c.alpha_prime_init) == (1.0, 1.0)
    assert c.deterministic_backup and c.target_action == "mean"
    assert c.importance_sampling and c.entropy_alpha_loss == "alpha" and c.alpha_prime_max == 1e6
