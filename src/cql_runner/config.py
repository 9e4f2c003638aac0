"""Structured configs: the one source of truth for every field and default.

Hydra merges the YAML in ``conf/`` onto these dataclasses, so an unknown key or a
value of the wrong type fails at composition. Range checks that types cannot express
live in :func:`validate`, which ``run()`` calls before building anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

# The choices of CQLConfig's string fields (checked in validate).
LAGRANGE_FORMS = ("weighted", "raw")
TARGET_ACTIONS = ("sample", "mean")
ENTROPY_ALPHA_LOSSES = ("log", "alpha")
# α′ is kept at or below this (the original code's clamp).
ALPHA_PRIME_MAX = 1e6


class ConfigError(ValueError):
    """A configuration value is out of range; the message names the fix."""


@dataclass
class EnvConfig:
    """Task identity and fallbacks; ``conf/env/<name>.yaml`` fills it in."""

    name: str = MISSING
    # Reference returns for the D4RL normalized score. Dataset metadata wins when present.
    ref_min_score: float | None = None
    ref_max_score: float | None = None
    # Reward transform applied to the dataset once at load: r' = scale * r + bias.
    reward_scale: float = 1.0
    reward_bias: float = 0.0
    # Standardise observations with dataset statistics (applied in training and evaluation).
    normalize_obs: bool = False
    # Sparse-reward tasks: the raw per-step reward of a step that has not reached the goal.
    # An episode whose every reward equals it gets the return-to-go r_neg / (1 − γ) (after the
    # reward transform) at every step, as in Cal-QL. Null: every episode is summed as it is.
    sparse_reward_neg: float | None = None


@dataclass
class DatasetConfig:
    """Where the offline data comes from; ``_target_`` picks the source class."""

    _target_: str = "cql_runner.data.minari_source.MinariSource"
    # Minari dataset id, e.g. mujoco/hopper/medium-v0.
    id: str | None = None
    # A file or directory to read instead of the Minari store (shipped data, D4RL hdf5).
    path: str | None = None
    # Ask Minari to download a missing dataset (needs the minari[hf] extra and network).
    download: bool = False
    # Where flattened float32 arrays are cached; null means <minari root>/.cql_runner_cache.
    cache_dir: str | None = None
    # DQN Replay Dataset (env=atari-replay): the run folder under <path>/<game>/, the first fraction of
    # every checkpoint to load (0.01, 0.1: the CQL paper's 1% and 10%), and the frames per state.
    run: int = 1
    fraction: float = 1.0
    frame_stack: int = 4
    # The Atari game of the DQN Replay Dataset (the top-level `game=Pong`).
    game: str | None = None


@dataclass
class NetworkConfig:
    """Actor and critic MLPs."""

    hidden: list[int] = field(default_factory=lambda: [256, 256, 256])
    # Per-network overrides; null means use ``hidden``.
    actor_hidden: list[int] | None = None
    critic_hidden: list[int] | None = None
    n_critics: int = 2
    layer_norm: bool = False
    orthogonal_init: bool = False
    log_std_min: float = -20.0
    log_std_max: float = 2.0


@dataclass
class CQLConfig:
    """CQL(H) on SAC. The loss, in full (per critic i, batch means over s, a ~ D):

    gap_i   = E_{s,a}[ clip(T·logsumexp_j(cat_ij(s)/T) − Q_i(s,a)) ]  (per sample, to [clip_diff_min, clip_diff_max])
    cat_i   = [Q_i(s,u), Q_i(s,a), Q_i(s,c), Q_i(s,n)]   (importance_sampling: false, the default)
            = [Q_i(s,u)+|A|log2, Q_i(s,c)−log π(c|s), Q_i(s,n)−log π(n|s′)]   (true)
              N each of u~Unif, c~π(s), n~π(s′); a the dataset action
    cql_i   = alpha·gap_i                       (lagrange: false)
            = α′·(alpha·gap_i − tau)            (lagrange: true, lagrange_form: weighted; the original code)
            = α′·alpha·(gap_i − tau)            (lagrange: true, lagrange_form: raw; CORL, d3rlpy 2.8.1)
    L_Q     = Σ_i ½·E[(Q_i(s,a) − y)²] + cql_i,   y = r + γ(1−d)·min_i Q̄_i(s′, a′)
    L_α′    = −½ Σ_i cql_i                      (minimised over log α′; Q terms detached)

    α′ = exp(log α′), with log α′ projected to ≤ log(alpha_prime_max) after each step. a′ ~ π(·|s′)
    (target_action: sample) or a′ = tanh(μ(s′)) (target_action: mean). The common 1/(3N)
    inside the logsumexp is dropped (as in the original, CORL and d3rlpy), so ``tau`` is
    compared with the gap as written above.
    """

    # Conservative weight; with lagrange it multiplies α′.
    alpha: float = 5.0
    lagrange: bool = True
    # Lagrange threshold (the paper's τ). Only used when lagrange is true.
    tau: float = 10.0
    # What tau bounds: weighted = alpha·gap ≤ tau (the original code; with alpha 5, tau 10 asks
    # for gap ≤ 2), raw = gap ≤ tau (CORL, d3rlpy 2.8.1). The two agree at alpha = 1.
    lagrange_form: str = "weighted"
    # N: actions sampled from each proposal per state.
    n_actions: int = 10
    temperature: float = 1.0
    # false: the proposals enter the logsumexp unweighted, with Q(s, a_data) added (the original code's
    # min_q_version 2); true: each is weighted by its density (min_q_version 3, the default of the original
    # code, CORL, d3rlpy and TorchRL). false is the default because it is the one that keeps the default
    # conservative: on our hopper-medium (3 seeds, 20k steps, the rest default) the weighted estimator let Q
    # on dataset pairs pass their Monte-Carlo return from ~11k (112 vs 89 at 20k; final policies' Q̂(s0) 130
    # vs a true 121), the unweighted one held it below (75-77 vs 89; Q̂(s0) 80 vs 122) at the same score
    # (6.6): π's own samples get a weight of 1 instead of 1/π(a|s), so the penalty reaches the actions the
    # TD target uses. See docs/parity/README.md.
    importance_sampling: bool = False
    # TD target takes the max over N sampled next actions (of the min over critics).
    max_backup: bool = False
    # Drop the −α·log π entropy term from the TD target.
    deterministic_backup: bool = True
    # The TD target's next action: sample = a′ ~ π(·|s′) (the original, CORL), mean = tanh(μ(s′))
    # (d3rlpy 2.8.1; needs deterministic_backup and no max_backup).
    target_action: str = "sample"
    # Steps of behaviour-cloning actor loss before the SAC actor loss takes over.
    bc_steps: int = 0
    # Clamp each sample's ood(s) − Q(s, a) before the batch mean (CORL's cql_clip_diff_min/max).
    clip_diff_min: float = -math.inf
    clip_diff_max: float = math.inf
    policy_lr: float = 1e-4
    critic_lr: float = 3e-4
    # Learning rate of the entropy temperature α.
    alpha_lr: float = 3e-4
    # Learning rate of the Lagrange multiplier α′ (the original and CORL: the critic's rate).
    alpha_prime_lr: float = 3e-4
    alpha_prime_init: float = 1.0
    # Upper bound on α′: log α′ is projected to ≤ log(alpha_prime_max) after each step. 1e6 is the
    # original code's, CORL's and d3rlpy's bound. A bound of 1 makes alpha the largest weight the
    # conservative term gets (an unreachable tau then means fixed-α CQL); measured on our weak
    # hopper-medium, 3 seeds, 20k steps, it scored the same (6.5 ± 0.1 vs 6.6) but over-estimated the
    # final policies' value more (Q̂(s0) 156 vs a true 120, against 130 vs 121 at 1e6): see docs/parity.
    alpha_prime_max: float = ALPHA_PRIME_MAX
    discount: float = 0.99
    # Polyak averaging rate for the target critics (named so it cannot clash with tau).
    target_update_rate: float = 5e-3
    # Null means −|A|.
    target_entropy: float | None = None
    # false turns off automatic entropy tuning and keeps α at entropy_alpha_init.
    auto_entropy: bool = True
    entropy_alpha_init: float = 1.0
    # What multiplies (log π + target_entropy) in the temperature's loss: log = log α (the original
    # code, CORL, TorchRL), alpha = α itself (d3rlpy 2.8.1). Both move log α the same way; under Adam
    # the alpha form's steps shrink as α decays, so its α falls more slowly (on our hopper-medium at
    # d3rlpy's settings, from 1 with lr 1e-4: 0.413 at 10k against 0.384, d3rlpy's own schedule; the
    # score did not move, 10 seeds: see docs/parity/README.md).
    entropy_alpha_loss: str = "log"
    # Cal-QL (preset cql=calql): bound the π(s) and π(s′) proposals below by the Monte-Carlo
    # return-to-go of the batch's transitions, Q ← max(Q, G), before the logsumexp.
    calibration: bool = False


@dataclass
class DiscreteConfig:
    """Discrete-action CQL (``action_space=discrete``): the exact logsumexp over all actions.

    gap     = E_s[ T·logsumexp_a(Q(s,a)/T) ] − E_{s,a∈D}[ Q(s,a) ]      (Q = mean over quantiles for qr_dqn)
    L_Q     = TD + cql.alpha·gap                          (cql.lagrange: false)
            = TD + α′·(cql.alpha·gap − cql.tau)           (lagrange_form weighted; raw: α′·alpha·(gap − tau))
    TD      = ½·E[(Q(s,a) − y)²] or Huber (double_dqn), quantile Huber (qr_dqn)
    y       = R⁽ⁿ⁾ + γᵐ(1 − d)·Q̄(s′, argmax_a Q(s′, a))     (n-step, cut at episode ends)

    The conservative weight, Lagrange settings, temperature, discount, the Q-network's learning
    rate (cql.critic_lr), α′'s (cql.alpha_prime_lr) and the Polyak rate come from ``cql``; the network
    sizes from ``network`` (one Q-network per seed: network.n_critics must be 1).
    """

    # double_dqn (d3rlpy's DiscreteCQL) | qr_dqn (the CQL paper's Atari base).
    backbone: str = "double_dqn"
    # TD loss of double_dqn: mse (½·(Q − y)²) | huber (δ = 1).
    td_loss: str = "huber"
    # QR-DQN's N (Dabney et al. 2018 use 200).
    n_quantiles: int = 200
    # Returns over n steps (the Atari recipe uses 3); 1 is one-step TD.
    n_step: int = 1
    # hard: copy the Q-network every target_update_every updates; polyak: cql.target_update_rate per update.
    target_update: str = "hard"
    # d3rlpy DiscreteCQL's default interval.
    target_update_every: int = 8000
    # Observation encoder: mlp (vector observations) | nature_cnn (uint8 frame stacks, Mnih et al. 2015).
    encoder: str = "mlp"
    # ε of the ε-greedy evaluation policy (0: greedy). 0.001 is the evaluation ε of the DQN Replay
    # Dataset (Agarwal et al. 2020) and Dopamine, on which the CQL paper's Atari runs are built;
    # the Nature DQN (Mnih et al. 2015) evaluated with 0.05.
    eval_epsilon: float = 0.001


@dataclass
class TrainConfig:
    """The training loop and its cadences; ``_target_`` picks the trainer class."""

    _target_: str = "cql_runner.trainer.Trainer"
    steps: int = 1_000_000
    batch_size: int = 256
    log_every: int = 1000
    checkpoint_every: int = 10_000
    # Progress bar on a terminal; plain lines every log step otherwise.
    progress: bool = True
    # bf16 autocast for the update (CPU AMX / GPU tensor cores).
    bf16: bool = False
    # torch.compile the update step.
    compile: bool = False
    # Capture the whole step (sampling, losses, backward, Adam, Polyak) as one CUDA graph and
    # replay it: removes per-kernel launch cost on GPU. CUDA only.
    cuda_graph: bool = False
    # Train this many seeds (seed, seed+1, ...) in one process with stacked parameters.
    num_seeds: int = 1
    # torch CPU threads; null keeps torch's default (one per core). Parallel sweep jobs on a
    # small machine need 1: OpenMP threads of two jobs spinning on the same cores cost up to 10x.
    threads: int | None = None


@dataclass
class EvalConfig:
    """Deterministic policy rollouts; ``_target_`` picks the evaluator class."""

    _target_: str = "cql_runner.evaluation.Evaluator"
    # Gymnasium id of the eval env; null means recover it from the dataset metadata.
    env_id: str | None = None
    # Evaluate every this many steps (0: only at the end).
    every: int = 10_000
    episodes: int = 10
    # Cap on episode length; null means the env's own time limit.
    max_episode_steps: int | None = None
    # Env seeds are seed * 10_000 + seed_offset + episode index.
    seed_offset: int = 100
    # Record a GIF of one episode every this many evaluations (0: never); logged to wandb too.
    video_every: int = 0
    video_max_frames: int = 500


@dataclass
class OnlineConfig:
    """Online fine-tuning in the eval env after the offline ``train.steps`` (cql_runner.online).

    Counts are per seed. ``train.batch_size``, ``train.log_every`` and ``eval.every`` keep their
    meaning, with env steps in place of update steps.
    """

    # Env steps of fine-tuning (0: off). With train.steps=0 it is online RL from scratch.
    steps: int = 0
    # Share of each batch drawn from the offline data; the rest comes from the online buffer.
    # Null: 0.5 after offline pre-training (Cal-QL, CORL), 0 with train.steps=0 (plain online SAC
    # from scratch, the baseline fine-tuning must beat).
    offline_ratio: float | None = None
    # Gradient updates per env step.
    utd: int = 1
    # Envs stepped side by side per seed (one SyncVectorEnv each); each counts towards steps.
    envs: int = 1
    # Uniform-action env steps before the policy acts.
    random_steps: int = 0
    # Keep the Cal-QL bound on while fine-tuning (the original Cal-QL), or drop it at the switch
    # (CORL). On by default: online episodes carry the current policy's own Monte-Carlo returns,
    # a valid lower bound of its value, so the calibration the bound buys stays correct online;
    # only has an effect with cql.calibration=true.
    calibrate_online: bool = True


@dataclass
class WandbConfig:
    """``logger=wandb``: mirror metrics, videos and the summary to Weights & Biases."""

    _target_: str = "cql_runner.logging.wandb_logger.WandbLogger"
    # offline | online | disabled; null respects WANDB_MODE.
    mode: str | None = None
    project: str = "cql-runner"
    entity: str | None = None
    group: str | None = None
    name: str | None = None
    tags: list[str] = field(default_factory=list)
    # Seconds to wait for the wandb service before giving up and logging locally only.
    init_timeout: float = 60.0


# Kept under its old name: the wandb logger's config was the only logger config before several loggers existed.
LoggerConfig = WandbConfig


@dataclass
class TensorBoardConfig:
    """``logger=tensorboard``: TensorBoard event files under ``<run_dir>/<subdir>``."""

    _target_: str = "cql_runner.logging.tensorboard_logger.TensorBoardLogger"
    subdir: str = "tb"
    # Seconds between flushes of the event file to disk.
    flush_secs: int = 30


@dataclass
class LoggersConfig:
    """The mirrors of the local logs, one key per logger; metrics.jsonl is always written besides them.

    ``logger=wandb`` fills ``logger.wandb``; ``logger=[wandb,tensorboard]`` fills both; ``logger=none`` neither.
    """

    wandb: WandbConfig | None = None
    tensorboard: TensorBoardConfig | None = None


@dataclass
class RunConfig:
    """The root config of ``cql-train``."""

    env: EnvConfig = field(default_factory=EnvConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    cql: CQLConfig = field(default_factory=CQLConfig)
    discrete: DiscreteConfig = field(default_factory=DiscreteConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    online: OnlineConfig = field(default_factory=OnlineConfig)
    logger: LoggersConfig = field(default_factory=LoggersConfig)
    seed: int = 0
    # The Atari game: env=atari-replay's folder name (dataset.path=DIR game=Pong; passed to dataset.game), or
    # env=atari-expert's Minari name (game=breakout → dataset.id atari/breakout/expert-v0).
    game: str | None = None
    # continuous: CQL(H) on SAC; discrete: CQL on Double DQN / QR-DQN (see DiscreteConfig).
    action_space: str = "continuous"
    # Explicit seeds to train side by side in one process (overrides seed and train.num_seeds);
    # each gets its own run dir <run_dir>/seed<k>.
    seeds: list[int] | None = None
    # auto | cpu | cuda (or cuda:N)
    device: str = "auto"
    # Where outputs go; null means Hydra's run dir (or the working dir outside Hydra).
    run_dir: str | None = None
    # A run dir to continue from; null means continue in place if the run dir has a checkpoint.
    resume: str | None = None
    # Resume although the config differs from the one the checkpoint was trained with (network
    # shapes excepted); the changes are recorded in <run_dir>/config_changes.jsonl.
    resume_allow_changes: bool = False


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _check_choice(key: str, value: object, choices: tuple[str, ...]) -> None:
    """``key`` must be one of ``choices``: "key must be a, b or c (got 'x')"."""
    named = ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else choices[0]
    _check(value in choices, f"{key} must be {named} (got {value!r})")


def validate(cfg: RunConfig | DictConfig) -> None:
    """Range checks that the types cannot express. Raises ConfigError naming the fix."""
    c = cfg.cql
    _check(c.tau >= 0, f"cql.tau must be >= 0 (got {c.tau}); pass e.g. cql.tau=5")
    _check(c.n_actions >= 1, f"cql.n_actions must be >= 1 (got {c.n_actions}); pass e.g. cql.n_actions=10")
    _check(c.alpha >= 0, f"cql.alpha must be >= 0 (got {c.alpha}); use cql.alpha=0 for plain offline SAC")
    _check(c.temperature > 0, f"cql.temperature must be > 0 (got {c.temperature})")
    _check(0 < c.discount <= 1, f"cql.discount must be in (0, 1] (got {c.discount})")
    _check(0 < c.target_update_rate <= 1, f"cql.target_update_rate must be in (0, 1] (got {c.target_update_rate})")
    _check(c.bc_steps >= 0, f"cql.bc_steps must be >= 0 (got {c.bc_steps})")
    _check(c.clip_diff_min < c.clip_diff_max, "cql.clip_diff_min must be < cql.clip_diff_max")
    _check(
        0 < c.alpha_prime_max <= ALPHA_PRIME_MAX,
        f"cql.alpha_prime_max must be in (0, {ALPHA_PRIME_MAX:g}] (got {c.alpha_prime_max})",
    )
    _check(
        0 < c.alpha_prime_init <= c.alpha_prime_max,
        f"cql.alpha_prime_init must be in (0, cql.alpha_prime_max={c.alpha_prime_max:g}] (got {c.alpha_prime_init}); "
        "lower it or raise cql.alpha_prime_max",
    )
    _check_choice("cql.lagrange_form", c.lagrange_form, LAGRANGE_FORMS)
    _check_choice("cql.target_action", c.target_action, TARGET_ACTIONS)
    _check_choice("cql.entropy_alpha_loss", c.entropy_alpha_loss, ENTROPY_ALPHA_LOSSES)
    if c.target_action == "mean":
        _check(
            c.deterministic_backup,
            "cql.target_action=mean has no log π for the entropy backup; "
            "add cql.deterministic_backup=true or use cql.target_action=sample",
        )
        _check(
            not c.max_backup,
            "cql.target_action=mean gives one next action, so max_backup has nothing to "
            "maximise over; drop cql.max_backup or use cql.target_action=sample",
        )
    _check(c.entropy_alpha_init > 0, f"cql.entropy_alpha_init must be > 0 (got {c.entropy_alpha_init})")
    _check(
        cfg.train.threads is None or cfg.train.threads >= 1,
        f"train.threads must be >= 1 or null for torch's default (got {cfg.train.threads})",
    )
    for name in ("policy_lr", "critic_lr", "alpha_lr", "alpha_prime_lr"):
        _check(getattr(c, name) > 0, f"cql.{name} must be > 0 (got {getattr(c, name)})")

    _check_choice("action_space", cfg.action_space, ("continuous", "discrete"))
    if cfg.action_space == "discrete":
        validate_discrete(cfg)

    n = cfg.network
    for name in ("hidden", "actor_hidden", "critic_hidden"):
        sizes = getattr(n, name)
        if sizes is not None:
            _check(
                len(sizes) >= 1 and all(h >= 1 for h in sizes),
                f"network.{name} must be a non-empty list of positive sizes (got {list(sizes)})",
            )
    _check(n.n_critics >= 1, f"network.n_critics must be >= 1 (got {n.n_critics})")
    _check(n.log_std_min < n.log_std_max, "network.log_std_min must be < network.log_std_max")

    t = cfg.train
    online = cfg.online
    if online.steps > 0:
        _check(t.steps >= 0, f"train.steps must be >= 0 (got {t.steps}); 0 fine-tunes from scratch")
    else:
        _check(t.steps >= 1, f"train.steps must be >= 1 (got {t.steps}), or pass online.steps=N for online RL")
    _check(online.steps >= 0, f"online.steps must be >= 0 (got {online.steps}); 0 turns fine-tuning off")
    ratio = online.offline_ratio
    _check(
        ratio is None or 0.0 <= ratio <= 1.0,
        f"online.offline_ratio must be in [0, 1] (got {ratio}); e.g. online.offline_ratio=0.5",
    )
    _check(online.utd >= 1, f"online.utd must be >= 1 (got {online.utd}); it is updates per env step")
    _check(online.envs >= 1, f"online.envs must be >= 1 (got {online.envs})")
    _check(online.random_steps >= 0, f"online.random_steps must be >= 0 (got {online.random_steps})")
    _check(t.batch_size >= 1, f"train.batch_size must be >= 1 (got {t.batch_size})")
    _check(t.log_every >= 1, f"train.log_every must be >= 1 (got {t.log_every})")
    _check(t.num_seeds >= 1, f"train.num_seeds must be >= 1 (got {t.num_seeds})")
    if cfg.seeds is not None:
        _check(
            len(cfg.seeds) >= 1 and len(set(cfg.seeds)) == len(cfg.seeds),
            f"seeds must be a non-empty list of distinct integers (got {list(cfg.seeds)})",
        )
    _check(t.checkpoint_every >= 1, f"train.checkpoint_every must be >= 1 (got {t.checkpoint_every})")

    e = cfg.eval
    _check(e.every >= 0, f"eval.every must be >= 0 (got {e.every}); 0 evaluates only at the end")
    _check(e.episodes >= 1, f"eval.episodes must be >= 1 (got {e.episodes})")
    _check(e.video_every >= 0, f"eval.video_every must be >= 0 (got {e.video_every}); 0 turns videos off")

    wandb = cfg.logger.wandb
    mode = None if wandb is None else wandb.mode
    _check(
        mode in (None, "offline", "online", "disabled"),
        f"logger.wandb.mode must be offline, online or disabled (got {mode!r})",
    )
    device = str(cfg.device)
    _check(device in ("auto", "cpu") or device.startswith("cuda"), f"device must be auto, cpu or cuda (got {device!r})")
    _check(
        cfg.dataset.id is not None or cfg.dataset.path is not None,
        f"env={cfg.env.name} names no data: pass dataset.path=<file or dir> (e.g. for env=d4rl-file) "
        "or dataset.id=<Minari id>, or pick a task with env=<name>",
    )


def validate_discrete(cfg: RunConfig | DictConfig) -> None:
    """Checks of a discrete run: its own fields, and the shared plumbing it does not support."""
    d = cfg.discrete
    _check_choice("discrete.backbone", d.backbone, ("double_dqn", "qr_dqn"))
    _check_choice("discrete.td_loss", d.td_loss, ("mse", "huber"))
    _check(d.n_quantiles >= 1, f"discrete.n_quantiles must be >= 1 (got {d.n_quantiles})")
    _check(d.n_step >= 1, f"discrete.n_step must be >= 1 (got {d.n_step})")
    _check_choice("discrete.target_update", d.target_update, ("hard", "polyak"))
    _check(d.target_update_every >= 1, f"discrete.target_update_every must be >= 1 (got {d.target_update_every})")
    _check_choice("discrete.encoder", d.encoder, ("mlp", "nature_cnn"))
    _check(0 <= d.eval_epsilon <= 1, f"discrete.eval_epsilon must be in [0, 1] (got {d.eval_epsilon})")
    _check(
        cfg.network.n_critics == 1,
        f"action_space=discrete trains one Q-network per seed; pass network.n_critics=1 (got {cfg.network.n_critics})",
    )
    for flag in ("cuda_graph", "compile", "bf16"):
        _check(not getattr(cfg.train, flag), f"train.{flag}=true is not supported with action_space=discrete; drop it")
    _check(cfg.eval.video_every == 0, "eval.video_every is not supported with action_space=discrete; drop it")
    # Discrete BC reads the Q-network's outputs as policy logits, which are not Q-values to go on from.
    _check(
        cfg.cql.bc_steps == 0 or cfg.cql.bc_steps >= cfg.train.steps,
        f"with action_space=discrete, behaviour cloning is the whole run: pass cql=bc (or cql.bc_steps=0), "
        f"not cql.bc_steps={cfg.cql.bc_steps} < train.steps={cfg.train.steps}",
    )


def unused_settings(cfg: RunConfig | DictConfig) -> list[str]:
    """One-line warnings for settings that differ from their default but have no effect under the rest
    of the config (from the CLI, a YAML file or a test's config alike)."""
    c, default = cfg.cql, CQLConfig()
    messages = []
    if not c.lagrange:
        # Not lagrange_form: presets pin it (the recipe's form) whether or not a user turns Lagrange off.
        for key in ("tau", "alpha_prime_lr", "alpha_prime_init", "alpha_prime_max"):
            if getattr(c, key) != getattr(default, key):
                messages.append(
                    f"cql.{key} is set but cql.lagrange=false, so {key} has no effect; add cql.lagrange=true"
                )
    return messages


def resolve_seeds(cfg: RunConfig | DictConfig) -> list[int]:
    """The seeds this run trains: ``seeds`` if given, else seed, seed+1, … (train.num_seeds of them)."""
    if cfg.seeds is not None:
        return [int(s) for s in cfg.seeds]
    return [int(cfg.seed) + k for k in range(int(cfg.train.num_seeds))]


def asset_path(relative: str) -> str:
    """Absolute path of a file shipped in the package's assets (resolver ``${asset:...}``)."""
    from importlib.resources import files

    return str(files("cql_runner") / "assets" / relative)


def register_configs() -> None:
    """Register the schemas and resolvers so YAML in conf/ is validated against them."""
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    if not OmegaConf.has_resolver("asset"):
        OmegaConf.register_new_resolver("asset", asset_path)
    if not OmegaConf.has_resolver("d4rl_ref"):
        from cql_runner.reference_scores import d4rl_reference

        OmegaConf.register_new_resolver("d4rl_ref", d4rl_reference)
