"""The structured config of ``cql-collect``: one source of truth for every field and default.

``conf/collect.yaml`` merges onto :class:`CollectConfig` (registered as ``collect_schema``),
so an unknown key or a wrongly typed value fails at composition; :func:`validate` adds the
range checks, each a one-line :class:`~cql_runner.config.ConfigError` naming the fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from cql_runner.config import ConfigError

LEVELS = ("random", "medium", "expert", "medium-replay", "medium-expert")
# Envs whose datasets follow Minari's own naming: mujoco/<name>/<level>-v0.
MINARI_MUJOCO = {"Hopper-v5": "hopper", "HalfCheetah-v5": "halfcheetah", "Walker2d-v5": "walker2d", "Ant-v5": "ant"}


@dataclass
class CollectSection:
    """How the dataset itself is gathered from a frozen behaviour policy."""

    # Transitions to write (per part for medium-expert, which holds 2x; a cap for medium-replay).
    steps: int = 1_000_000
    # Episodes run side by side in one SyncVectorEnv while collecting.
    envs: int = 10
    # Collect with the deterministic tanh(mean) action instead of sampling the SAC policy
    # (discrete envs: the greedy DQN action instead of the ε-greedy one).
    deterministic: bool = False
    # Discrete envs: ε of the ε-greedy DQN behaviour policy, so the data covers more than one
    # action per state.
    epsilon: float = 0.1


@dataclass
class SACConfig:
    """Online SAC that trains the behaviour policies (CQLAgent with the conservative term off)."""

    # Env steps of online training (the budget); the expert is the best snapshot within it.
    steps: int = 1_000_000
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    n_critics: int = 2
    batch_size: int = 256
    # Uniform-random actions for the first start_steps env steps (capped at steps // 10).
    start_steps: int = 5_000
    # Gradient updates per env step.
    updates_per_step: int = 1
    # Training envs stepped side by side (each env step counts towards ``steps``).
    envs: int = 1
    lr: float = 3e-4
    discount: float = 0.99
    target_update_rate: float = 5e-3
    # Deterministic evaluation (and a policy snapshot) every this many env steps, and at the end.
    eval_every: int = 5_000
    eval_episodes: int = 5
    # Resumable training: checkpoint into the behaviour cache every this many env steps (0: never).
    checkpoint_every: int = 25_000


@dataclass
class DQNConfig:
    """Online Double DQN that trains the behaviour policies of Discrete-action envs (the discrete
    CQL agent with the conservative term off)."""

    # Env steps of online training (the budget); the expert is the best snapshot within it.
    steps: int = 100_000
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    batch_size: int = 64
    # Uniform-random actions for the first start_steps env steps (capped at steps // 10).
    start_steps: int = 1_000
    lr: float = 5e-4
    discount: float = 0.99
    # Hard target-network copy every this many updates.
    target_update_every: int = 500
    # ε-greedy exploration: ε decays linearly from 1 to epsilon_end over epsilon_fraction·steps.
    epsilon_end: float = 0.05
    epsilon_fraction: float = 0.2
    # Greedy evaluation (and a Q-network snapshot) every this many env steps, and at the end.
    eval_every: int = 5_000
    eval_episodes: int = 5


@dataclass
class CollectConfig:
    """The root config of ``cql-collect``."""

    # Gymnasium id, e.g. Hopper-v5 (Box actions: SAC behaviour) or CartPole-v1 (Discrete: DQN).
    env: str = MISSING
    level: str = "medium"
    # Minari id to write; null derives it from env and level (see default_dataset_id).
    dataset_id: str | None = None
    seed: int = 0
    collect: CollectSection = field(default_factory=CollectSection)
    sac: SACConfig = field(default_factory=SACConfig)
    dqn: DQNConfig = field(default_factory=DQNConfig)
    # Medium = the first snapshot whose return reaches random + medium_fraction·(expert − random).
    medium_fraction: float = 1.0 / 3.0
    # Episodes used to measure the reference returns (random policy, expert policy).
    ref_episodes: int = 10
    # Overrides for the measured reference scores (ref_max_score lets `random` skip SAC).
    ref_min_score: float | None = None
    ref_max_score: float | None = None
    # Env time-limit override; null keeps the registered one.
    max_episode_steps: int | None = None
    # Root of the behaviour-policy cache: <out_dir>/behaviour/<env>/seed<k>/sac-<hash>/.
    # null means $CQL_RUNNER_CACHE_DIR, else ~/.cache/cql_runner (shared across runs).
    out_dir: str | None = None
    # Replace an existing dataset with the same id (otherwise that is an error).
    overwrite: bool = False
    # torch threads for training and collection (fixed, so results are bit-reproducible).
    threads: int = 1
    # A progress bar on a terminal, plain lines otherwise; false prints only the summary.
    progress: bool = True


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(cfg: Any) -> None:
    """Range checks the types cannot express; raises ConfigError with a one-line fix."""
    _check(
        not (OmegaConf.is_config(cfg) and OmegaConf.is_missing(cfg, "env")),
        "env is required: pass env=<Gymnasium id>, e.g. env=Hopper-v5",
    )
    _check(cfg.level in LEVELS, f"level must be one of {', '.join(LEVELS)} (got {cfg.level!r})")
    _check(cfg.seed >= 0, f"seed must be >= 0 (got {cfg.seed})")
    c, s = cfg.collect, cfg.sac
    _check(c.steps >= 1, f"collect.steps must be >= 1 (got {c.steps}); pass e.g. collect.steps=100000")
    _check(c.envs >= 1, f"collect.envs must be >= 1 (got {c.envs})")
    _check(s.steps >= 1, f"sac.steps must be >= 1 (got {s.steps}); pass e.g. sac.steps=100000")
    _check(
        len(s.hidden) >= 1 and all(h >= 1 for h in s.hidden),
        f"sac.hidden must be a non-empty list of positive sizes (got {list(s.hidden)})",
    )
    _check(s.n_critics >= 1, f"sac.n_critics must be >= 1 (got {s.n_critics})")
    _check(s.batch_size >= 1, f"sac.batch_size must be >= 1 (got {s.batch_size})")
    _check(s.start_steps >= 0, f"sac.start_steps must be >= 0 (got {s.start_steps})")
    _check(s.updates_per_step >= 1, f"sac.updates_per_step must be >= 1 (got {s.updates_per_step})")
    _check(s.envs >= 1, f"sac.envs must be >= 1 (got {s.envs})")
    _check(s.lr > 0, f"sac.lr must be > 0 (got {s.lr})")
    _check(0 < s.discount <= 1, f"sac.discount must be in (0, 1] (got {s.discount})")
    _check(0 < s.target_update_rate <= 1, f"sac.target_update_rate must be in (0, 1] (got {s.target_update_rate})")
    _check(s.eval_every >= 1, f"sac.eval_every must be >= 1 (got {s.eval_every})")
    _check(1 <= s.eval_episodes <= 1000, f"sac.eval_episodes must be in [1, 1000] (got {s.eval_episodes})")
    _check(s.checkpoint_every >= 0, f"sac.checkpoint_every must be >= 0 (got {s.checkpoint_every}); 0 disables it")
    _check(0 <= c.epsilon <= 1, f"collect.epsilon must be in [0, 1] (got {c.epsilon})")
    q = cfg.dqn
    _check(q.steps >= 1, f"dqn.steps must be >= 1 (got {q.steps}); pass e.g. dqn.steps=50000")
    _check(
        len(q.hidden) >= 1 and all(h >= 1 for h in q.hidden),
        f"dqn.hidden must be a non-empty list of positive sizes (got {list(q.hidden)})",
    )
    for name in ("batch_size", "target_update_every", "eval_every", "eval_episodes"):
        _check(getattr(q, name) >= 1, f"dqn.{name} must be >= 1 (got {getattr(q, name)})")
    _check(q.start_steps >= 0, f"dqn.start_steps must be >= 0 (got {q.start_steps})")
    _check(q.lr > 0, f"dqn.lr must be > 0 (got {q.lr})")
    _check(0 < q.discount <= 1, f"dqn.discount must be in (0, 1] (got {q.discount})")
    _check(0 <= q.epsilon_end <= 1, f"dqn.epsilon_end must be in [0, 1] (got {q.epsilon_end})")
    _check(0 < q.epsilon_fraction <= 1, f"dqn.epsilon_fraction must be in (0, 1] (got {q.epsilon_fraction})")
    _check(0 < cfg.medium_fraction < 1, f"medium_fraction must be in (0, 1) (got {cfg.medium_fraction})")
    _check(1 <= cfg.ref_episodes <= 1000, f"ref_episodes must be in [1, 1000] (got {cfg.ref_episodes})")
    _check(
        cfg.max_episode_steps is None or cfg.max_episode_steps >= 1,
        f"max_episode_steps must be >= 1 or null (got {cfg.max_episode_steps})",
    )
    _check(cfg.threads >= 1, f"threads must be >= 1 (got {cfg.threads})")
    lo, hi = cfg.ref_min_score, cfg.ref_max_score
    _check(lo is None or hi is None or lo < hi, f"ref_min_score must be < ref_max_score (got {lo} and {hi})")


def default_dataset_id(env_id: str, level: str) -> str:
    """mujoco/<env>/<level>-v0 for Minari's MuJoCo tasks, else cql_runner/<env>/<level>-v0."""
    if env_id in MINARI_MUJOCO:
        return f"mujoco/{MINARI_MUJOCO[env_id]}/{level}-v0"
    if env_id.startswith("MinAtar/"):  # MinAtar/SpaceInvaders-v1 → minatar-space_invaders
        game = re.sub(r"-v\d+$", "", env_id.split("/", 1)[1])
        return f"cql_runner/minatar-{re.sub(r'(?<!^)(?=[A-Z])', '_', game).lower()}/{level}-v0"
    name = re.sub(r"-v\d+$", "", env_id.rsplit("/", 1)[-1]).lower()
    name = re.sub(r"[^a-z0-9_-]+", "-", name).strip("-") or "env"
    return f"cql_runner/{name}/{level}-v0"


def register_configs() -> None:
    """Register the schema so conf/collect.yaml is validated against it."""
    ConfigStore.instance().store(name="collect_schema", node=CollectConfig)
