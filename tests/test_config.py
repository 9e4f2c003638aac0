"""Configuration: every shipped config composes and validates; bad values fail clearly."""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import TINY_OVERRIDES
from omegaconf import DictConfig

from cql_runner.cli import CONFIG_GROUPS, group_options, unknown_group_choice, unselected_logger
from cql_runner.config import ConfigError, RunConfig, unused_settings, validate
from cql_runner.overrides import unknown_key

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("env", group_options("env"))
def test_every_env_config_composes_and_validates(compose_cfg: Callable[..., DictConfig], env: str) -> None:
    extra = {
        "d4rl-file": ["dataset.path=/data/hopper-medium-v2.hdf5", "eval.env_id=Hopper-v4"],
        "atari-replay": ["dataset.path=/data/dqn-replay", "game=Pong"],
    }.get(env, [])
    cfg = compose_cfg([f"env={env}", *extra])
    validate(cfg)
    assert cfg.env.name == env
    assert cfg.dataset.id or cfg.dataset.path


def test_locomotion_names_map_to_minari_ids(compose_cfg: Callable[..., DictConfig]) -> None:
    cfg = compose_cfg(["env=hopper-medium"])
    assert cfg.dataset.id == "mujoco/hopper/medium-v0"
    assert cfg.eval.env_id == "Hopper-v5"
    assert (cfg.env.ref_min_score, cfg.env.ref_max_score) == (-20.272305, 3234.3)


def test_default_config_points_at_the_shipped_dataset(compose_cfg: Callable[..., DictConfig]) -> None:
    cfg = compose_cfg([])
    assert cfg.env.name == "pendulum-medium-replay"
    assert Path(cfg.dataset.path).parts[-3:] == ("assets", "datasets", "pendulum-medium-replay-v0")


def test_the_cli_contract_keys_exist(compose_cfg: Callable[..., DictConfig]) -> None:
    cfg = compose_cfg(
        [
            "seed=3",
            "device=cpu",
            "train.steps=5",
            "train.batch_size=8",
            "train.log_every=1",
            "eval.every=0",
            "eval.episodes=1",
            "logger=none",
            "cql.tau=2",
            "cql.alpha=1",
            "cql.lagrange=false",
            "cql.n_actions=2",
            "network.hidden=[8,8,8]",
        ]
    )
    assert cfg.network.hidden == [8, 8, 8] and cfg.cql.tau == 2
    assert cfg.logger.wandb is None and cfg.logger.tensorboard is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("cql.tau=-0.5", "cql.tau must be >= 0"),
        ("cql.n_actions=0", "cql.n_actions must be >= 1"),
        ("cql.alpha=-1", "cql.alpha must be >= 0"),
        ("cql.temperature=0", "cql.temperature must be > 0"),
        ("network.hidden=[]", "network.hidden must be a non-empty list"),
        ("network.n_critics=0", "network.n_critics must be >= 1"),
        ("train.batch_size=0", "train.batch_size must be >= 1"),
        ("eval.episodes=0", "eval.episodes must be >= 1"),
        ("eval.every=-1", "eval.every must be >= 0"),
        ("device=tpu", "device must be auto, cpu or cuda"),
        ("cql.clip_diff_min=5", "cql.clip_diff_min must be < cql.clip_diff_max"),
        ("train.threads=0", "train.threads must be >= 1"),
        ("logger.wandb.mode=sometimes", "logger.wandb.mode must be offline, online or disabled"),
        ("cql.lagrange_form=rawgap", "cql.lagrange_form must be weighted or raw"),
        ("cql.target_action=max", "cql.target_action must be sample or mean"),
        ("cql.entropy_alpha_loss=exp", "cql.entropy_alpha_loss must be log or alpha"),
        ("cql.target_action=mean", "cql.target_action=mean has no log π for the entropy backup"),
        ("cql.alpha_prime_lr=0", "cql.alpha_prime_lr must be > 0"),
        ("cql.alpha_prime_init=2e6", "cql.alpha_prime_init must be in"),
        ("cql.alpha_prime_max=0.5", "raise cql.alpha_prime_max"),  # below the initial α′ (1)
        ("cql.alpha_prime_max=2e6", "cql.alpha_prime_max must be in"),
        ("cql.alpha_prime_max=0", "cql.alpha_prime_max must be in"),
    ],
)
def test_out_of_range_values_raise_config_error(
    compose_cfg: Callable[..., DictConfig], override: str, message: str
) -> None:
    overrides = [override]
    if override.startswith("cql.clip_diff_min"):
        overrides.append("cql.clip_diff_max=1")
    if override == "cql.target_action=mean":
        overrides.append("cql.deterministic_backup=false")
    cfg = compose_cfg(overrides)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        validate(cfg)


def test_mean_target_action_with_max_backup_is_a_config_error(compose_cfg: Callable[..., DictConfig]) -> None:
    with pytest.raises(ConfigError, match="max_backup has nothing to maximise"):
        validate(compose_cfg(["cql.target_action=mean", "cql.max_backup=true"]))
    validate(compose_cfg(["cql.target_action=mean"]))  # with the default deterministic backup: fine


def test_type_errors_fail_at_composition(compose_cfg: Callable[..., DictConfig]) -> None:
    with pytest.raises(Exception, match="n_actions"):
        compose_cfg(["cql.n_actions=ten"])
    with pytest.raises(Exception, match="tua"):
        compose_cfg(["cql.tua=3"])


def test_unknown_group_option_gets_a_suggestion() -> None:
    message = unknown_group_choice(["env=hoper-medium"])
    assert message is not None and "did you mean hopper-medium" in message
    assert unknown_group_choice(["env=hopper-medium,walker2d-medium", "seed=1"]) is None
    assert unselected_logger(["logger=tensorboard", "logger.wandb.mode=offline"]) == (
        "logger.wandb.mode is set but logger=tensorboard does not select wandb; "
        "pass logger=wandb or logger=[tensorboard,wandb]"
    )
    assert unselected_logger(["logger=[wandb,tensorboard]", "logger.wandb.mode=offline"]) is None
    assert unselected_logger(["logger=many_loggers", "logger.tensorboard.subdir=x"]) is None
    message = unknown_group_choice(["logger=tensorbord"]) or ""
    assert "unknown logger 'tensorbord'; did you mean tensorboard?" in message
    assert unknown_group_choice(["logger=[wandb,tensorboard]"]) is None


@pytest.mark.parametrize(
    ("override", "suggestion"),
    [
        ("cql.tua=3", "did you mean cql.tau?"),
        ("train.step=5", "did you mean train.steps?"),
        ("eval.evry=2", "did you mean eval.every?"),
        ("sed=3", "did you mean seed or seeds?"),
        ("network.hiden=[8]", "did you mean network.hidden?"),
        ("cql.zzz=1,2", "keys of cql: alpha,"),  # a sweep value, and no close match: the keys are listed
    ],
)
def test_unknown_key_names_the_likely_one(override: str, suggestion: str) -> None:
    message = unknown_key(["env=hopper-medium", override], RunConfig, CONFIG_GROUPS)
    assert message is not None and suggestion in message
    assert message.startswith(f"unknown key '{override.partition('=')[0]}'") and "\n" not in message


@pytest.mark.parametrize(
    "override",
    [
        "cql.tau=3",
        "seeds=[0,1]",
        "network.hidden=[8,8]",
        "train._target_=my.Trainer",
        "env.name=x",
        "env=hopper-medium",
        "debug=tiny",
        "launcher=joblib",
        "hydra.run.dir=x",
        "hydra/launcher=joblib",
        "+extra=1",
        "~cql.tau",
        "-m",
    ],
)
def test_unknown_key_leaves_valid_and_hydra_syntax_alone(override: str) -> None:
    assert unknown_key([override], RunConfig, CONFIG_GROUPS) is None


def test_unknown_key_accepts_every_key_of_the_composed_config(compose_cfg: Callable[..., DictConfig]) -> None:
    """The check and Hydra agree: every key of a composed config passes it."""
    cfg = compose_cfg([])
    keys = [
        f"{head}.{name}" if isinstance(node, DictConfig) else head
        for head, node in cfg.items()
        for name in (node if isinstance(node, DictConfig) else [None])
    ]
    assert "cql.tau" in keys and "seed" in keys
    for key in keys:
        assert unknown_key([f"{key}=1"], RunConfig, CONFIG_GROUPS) is None, key


def test_every_package_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    src = ROOT / "src"
    found = {".".join(p.parent.relative_to(src).parts) for p in src.rglob("__init__.py")}
    assert found | {"cql_runner.conf"} == listed


def test_d4rl_file_without_a_path_names_the_fix(compose_cfg: Callable[..., DictConfig]) -> None:
    with pytest.raises(ConfigError, match=r"env=d4rl-file names no data: pass dataset.path="):
        validate(compose_cfg(["env=d4rl-file", "eval.env_id=Hopper-v4"]))


def test_d4rl_file_reference_scores_follow_the_eval_env(compose_cfg: Callable[..., DictConfig]) -> None:
    cfg = compose_cfg(["env=d4rl-file", "dataset.path=/x.hdf5", "eval.env_id=Walker2d-v4"])
    assert (cfg.env.ref_min_score, cfg.env.ref_max_score) == (1.629008, 4592.3)


def test_antmaze_uses_the_tuned_recipe(compose_cfg: Callable[..., DictConfig]) -> None:
    cfg = compose_cfg(["env=antmaze-umaze"])
    assert cfg.dataset.id == "D4RL/antmaze/umaze-v1"
    assert cfg.cql.lagrange and cfg.cql.tau == 0.8 and cfg.cql.max_backup
    # CORL's τ = 0.8 bounds the raw gap; the weighted default would ask for gap ≤ 0.16.
    assert cfg.cql.lagrange_form == "raw" and cfg.cql.clip_diff_min == -200.0
    assert (cfg.env.reward_scale, cfg.env.reward_bias) == (10.0, -5.0)
    assert len(cfg.network.critic_hidden) == 5
    # A user's override still wins over the per-task setting.
    assert compose_cfg(["env=antmaze-umaze", "cql.tau=2"]).cql.tau == 2


@pytest.mark.parametrize(("launcher", "threads"), [("basic", None), ("joblib", 1), ("submitit_local", 1)])
def test_parallel_launchers_give_each_job_one_thread(
    compose_cfg: Callable[..., DictConfig], launcher: str, threads: int | None
) -> None:
    assert compose_cfg([f"launcher={launcher}"]).train.threads == threads


def test_cuda_without_a_gpu_is_a_config_error() -> None:
    import torch

    from cql_runner.run import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device=cuda was requested but no CUDA GPU"):
            resolve_device("cuda")


def test_cuda_graph_on_cpu_is_a_config_error(
    minari_root: Path, tmp_path: Path, compose_cfg: Callable[..., DictConfig]
) -> None:
    from cql_runner.run import run

    cfg = compose_cfg([*TINY_OVERRIDES, "device=cpu", "train.cuda_graph=true", f"run_dir={tmp_path / 'r'}"])
    with pytest.raises(ConfigError, match=r"train\.cuda_graph=true needs a CUDA device"):
        run(cfg)
    assert not (tmp_path / "r" / "checkpoints").exists()


@pytest.mark.parametrize(
    ("overrides", "unused"),
    [
        ([], []),
        (["cql.tau=5"], []),  # used: Lagrange is on
        (["cql=fixed"], []),
        (["cql=fixed", "cql.tau=5"], ["cql.tau"]),
        (
            ["cql.lagrange=false", "cql.alpha_prime_init=0.5", "cql.alpha_prime_lr=1e-4"],
            ["cql.alpha_prime_lr", "cql.alpha_prime_init"],
        ),
    ],
)
def test_settings_without_effect_are_found_from_the_config(
    compose_cfg: Callable[..., DictConfig], overrides: list[str], unused: list[str]
) -> None:
    """Decided from the composed config, so a value from a YAML file counts as much as one typed."""
    messages = unused_settings(compose_cfg(overrides))
    assert [m.split(" ")[0] for m in messages] == unused
    assert all("has no effect; add cql.lagrange=true" in m for m in messages)


def test_a_yaml_experiment_setting_tau_without_lagrange_is_found(compose_cfg: Callable[..., DictConfig]) -> None:
    cfg = compose_cfg(["experiment=d4rl_locomotion"])  # lagrange: false, tau untouched
    assert unused_settings(cfg) == []
    cfg.cql.tau = 3.0  # as a YAML file would set it
    assert unused_settings(cfg) == [
        "cql.tau is set but cql.lagrange=false, so tau has no effect; add cql.lagrange=true"
    ]


def test_readme_names_every_env_preset_that_sets_other_groups() -> None:
    """conf/env presets are @package _global_: what they set outside env/dataset/eval must be visible in
    the README's group table, family by family (issue: `network=default` silently got 2x64)."""
    import re
    from importlib.resources import files

    import yaml

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    env_row = next(line for line in readme.splitlines() if line.startswith("| `env` |"))
    families = {
        "antmaze": "`antmaze-*`",
        "pen": "`{pen,door,hammer,relocate}-*`",
        "door": "`{pen,door,hammer,relocate}-*`",
        "hammer": "`{pen,door,hammer,relocate}-*`",
        "relocate": "`{pen,door,hammer,relocate}-*`",
        "cartpole": "`{cartpole,acrobot,minatar-*}-*`",
        "acrobot": "`{cartpole,acrobot,minatar-*}-*`",
        "minatar": "`{cartpole,acrobot,minatar-*}-*`",
        "atari": "`atari-*`",
        "minigrid": "`minigrid-*`",
    }
    for path in sorted(Path(str(files("cql_runner.conf") / "env")).glob("*.yaml")):
        # `defaults` is the Hydra list a preset builds on (atari-pong-expert on atari-expert), not a setting.
        groups = set(yaml.safe_load(path.read_text())) - {"env", "dataset", "eval", "defaults"}
        if not groups:
            continue
        name = families.get(path.stem.split("-")[0], f"`{path.stem}`")
        assert f"{name} set" in env_row, f"README's env row does not name {path.stem}"
        said = env_row[env_row.index(f"{name} set") :].split(";")[0]
        for group in groups:  # a group's keys (`network.*`) or a top-level key (`action_space`)
            assert re.search(rf"`{group}(\.|`)", said), f"README's env row does not say that {name} sets {group}"


def _readme_cql_table() -> dict[str, str]:
    """key -> default as written in the README's `cql` key table (cells with several keys split)."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("### The `cql` group") : readme.index("### The loss, exactly")]
    table: dict[str, str] = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        key_cell, default_cell = (c.strip() for c in line.strip("|").split(" | ")[:2])
        keys = [k.strip().strip("`") for k in key_cell.split(",")]
        defaults = [d.strip() for d in default_cell.replace("\\|", "|").split(",")]
        assert len(keys) == len(defaults), line
        table.update(zip(keys, defaults))
    return table


def _as_readme(value: object, key: str) -> str:
    if value is None and key == "target_entropy":
        return "−|A|"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and math.isinf(value):
        return "−inf" if value < 0 else "inf"
    return str(value)


def test_readme_cql_table_matches_cql_config() -> None:
    """Every CQLConfig key is in the README's table with its default, and nothing else is."""
    import dataclasses

    from cql_runner.config import CQLConfig

    table, defaults = _readme_cql_table(), CQLConfig()
    fields = [f.name for f in dataclasses.fields(CQLConfig)]
    assert sorted(table) == sorted(fields)
    for key in fields:
        want, written = getattr(defaults, key), table[key]
        if isinstance(want, float) and not math.isinf(want) and written.replace(".", "").replace("e-", "").isdigit():
            assert float(written) == want, key
        else:
            assert written == _as_readme(want, key), key
