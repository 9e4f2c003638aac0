"""What the evidence suite runs: datasets, methods, budgets, and the exact CLI arguments for each.

Kept apart from the runner so the budget is one readable object (and the RESULTS.md can print it),
and so tests can check the command lines without running anything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cql_runner.evidence.finetune_plan import FINETUNE, OFFLINE, PHASES, SCRATCH, check_plan, step_args

# The Hopper behaviour cache is keyed by a hash of the sac.* config: every level built with these
# settings (by the suite or by hand with the same cql-collect overrides) shares one SAC run.
HOPPER_SAC_STEPS = 120_000
HOPPER_COLLECT_STEPS = 200_000
# The `finetune` budget (see finetune_plan): offline steps, online env steps, evaluation interval.
FT_TRAIN_STEPS = 2_500
FT_ONLINE_STEPS = 2_500
FT_EVAL_EVERY = 250  # 10% of the online steps: the dip window holds one evaluation


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: which env and level to collect, and how cql-train should read it."""

    key: str  # a short name, also the runs/ sub-folder and env.name of the runs (e.g. hopper-medium)
    env_id: str  # Gymnasium id given to cql-collect and used for evaluation
    level: str  # medium | medium-replay
    dataset_id: str  # the Minari id cql-collect derives by default
    # conf/env/<name>.yaml to train with, or None: then hopper-medium is overridden field by field.
    env_config: str | None
    sac_steps: int  # the behaviour learner's env steps: SAC's sac.steps, or dqn.steps on discrete data
    collect_steps: int
    # Extra cql-collect overrides (smaller SAC networks for the small tasks, tiny eval budgets in CI).
    collect_extra: tuple[str, ...] = ()
    # continuous (SAC behaviour) | discrete (DQN behaviour; see discrete_cells.py)
    action_space: str = "continuous"


@dataclass(frozen=True)
class MethodSpec:
    """A method is a cql group choice plus overrides, named the way RESULTS.md reports it.

    A peer method (``peer`` set to a ``cql_runner.peers`` algo) is trained by the peer library in its
    own venv on the same dataset, seeds, steps, network, batch and evaluation, instead of by cql-train.
    """

    name: str
    overrides: tuple[str, ...]
    peer: str | None = None
    # The datasets' action spaces the method's agent can act in; others are skipped (discrete_cells.py).
    action_spaces: tuple[str, ...] = ("continuous",)
    # offline | finetune (pre-training, then online.steps) | scratch (online only): see finetune_plan
    phase: str = OFFLINE

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"method {self.name}: phase {self.phase!r} is not one of {PHASES}")


METHODS: tuple[MethodSpec, ...] = (
    # The Lagrange form CORL and d3rlpy use (α′·α·(gap − τ)): the form docs/RESULTS.md was measured with.
    MethodSpec("cql-lagrange", ("cql=default", "cql.lagrange_form=raw")),
    MethodSpec("cql-fixed", ("cql=fixed",)),
    MethodSpec("sac", ("cql=sac",)),
    MethodSpec("bc", ("cql=bc",), action_spaces=("continuous", "discrete")),
)
# Not in a plan by default: asked for with --methods. cql-default is cql-train's own default
# (the original code's weighted Lagrange form, α′·(α·gap − τ)); the peers need the peer venv.
OPTIONAL_METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("cql-default", ("cql=default",)),
    # d3rlpy 2.8.1's CQL defaults converted by the README table (½ in our TD term: conservative_weight 5 ->
    # alpha 2.5; alpha_threshold 10 on the raw gap; temperature and α′ lr 1e-4, both initialised at 1,
    # α′ bounded by 1e6; actor/critic lr 1e-4/3e-4; deterministic backup at the mean next action; the
    # importance-sampled logsumexp): the parity cell (b).
    MethodSpec(
        "cql-as-d3rlpy",
        (
            "cql=default",
            "cql.alpha=2.5",
            "cql.lagrange=true",
            "cql.lagrange_form=raw",
            "cql.tau=10",
            "cql.alpha_lr=1e-4",
            "cql.alpha_prime_lr=1e-4",
            "cql.policy_lr=1e-4",
            "cql.critic_lr=3e-4",
            "cql.entropy_alpha_init=1.0",
            "cql.alpha_prime_init=1.0",
            "cql.alpha_prime_max=1e6",
            "cql.deterministic_backup=true",
            "cql.target_action=mean",
            "cql.importance_sampling=true",
            "cql.entropy_alpha_loss=alpha",
        ),
    ),
    MethodSpec("d3rlpy-cql", (), peer="cql"),
    MethodSpec("d3rlpy-bc", (), peer="bc"),
    # Offline-to-online fine-tuning (the plan's online_steps env steps after train_steps), and online SAC
    # from scratch for the same env steps: the budget `finetune` runs these three.
    MethodSpec("ft-cql", ("cql=default",), phase=FINETUNE),
    MethodSpec("ft-calql", ("cql=calql",), phase=FINETUNE),
    MethodSpec("ft-sac-scratch", ("cql=sac",), phase=SCRATCH),
)


@dataclass(frozen=True)
class Plan:
    """Everything that sets the suite's cost; printed into RESULTS.md as 'the budget used'."""

    name: str
    datasets: tuple[DatasetSpec, ...]
    methods: tuple[MethodSpec, ...] = METHODS
    seeds: tuple[int, ...] = (0, 1, 2)
    train_steps: int = 8_000
    hidden: tuple[int, ...] = (128, 128)
    batch_size: int = 256
    eval_every: int = 1_000
    eval_episodes: int = 5
    log_every: int = 500
    checkpoint_every: int = 5_000
    n_actions: int = 10
    # Monte-Carlo episodes per seed for the lower-bound check.
    value_episodes: int = 10
    # Fine-tuning methods only: env steps of the online phase, and the evaluation interval of their runs.
    online_steps: int = 0
    online_eval_every: int = 500
    extra_train: tuple[str, ...] = field(default_factory=tuple)

    def budget_dict(self) -> dict[str, object]:
        """The plan as plain JSON (for timing.json and RESULTS.md)."""
        return dataclasses.asdict(self)


def _dataset(
    env_id: str,
    short: str,
    level: str,
    sac_steps: int,
    collect_steps: int,
    minari_name: str | None,
    extra: Sequence[str] = (),
) -> DatasetSpec:
    """Datasets of Minari's MuJoCo tasks get mujoco/<name>/<level>-v0 (cql-collect's default id)."""
    dataset_id = f"mujoco/{minari_name}/{level}-v0" if minari_name else f"cql_runner/{short}/{level}-v0"
    env_config = f"{short}-{level}" if minari_name else None
    return DatasetSpec(
        f"{short}-{level}", env_id, level, dataset_id, env_config, sac_steps, collect_steps, tuple(extra)
    )


def _datasets(
    hopper_sac_steps: int, hopper_collect_steps: int, idp_sac_steps: int, idp_collect_steps: int
) -> tuple[DatasetSpec, ...]:
    idp_extra = ("sac.hidden=[64,64]",)  # the small task's SAC needs no 256-wide nets, and this halves its cost
    return (
        _dataset("Hopper-v5", "hopper", "medium", hopper_sac_steps, hopper_collect_steps, "hopper"),
        _dataset("Hopper-v5", "hopper", "medium-replay", hopper_sac_steps, hopper_collect_steps, "hopper"),
        _dataset(
            "InvertedDoublePendulum-v5",
            "inverteddoublependulum",
            "medium",
            idp_sac_steps,
            idp_collect_steps,
            None,
            idp_extra,
        ),
        _dataset(
            "InvertedDoublePendulum-v5",
            "inverteddoublependulum",
            "medium-replay",
            idp_sac_steps,
            idp_collect_steps,
            None,
            idp_extra,
        ),
    )


def default_plan(
    hopper_sac_steps: int = HOPPER_SAC_STEPS,
    hopper_collect_steps: int = HOPPER_COLLECT_STEPS,
    idp_sac_steps: int = 20_000,
    idp_collect_steps: int = 100_000,
) -> Plan:
    """The full CPU suite: Hopper-v5 and InvertedDoublePendulum-v5, medium and medium-replay, 4 methods × 3 seeds.

    20k gradient steps: at 8k the Hopper scores and Q-values were still climbing; at 20k the scores have
    flattened (RESULTS.md measures the change over the last quarter). Measured on the project's 2-core
    AMD EPYC box with ``--jobs 2`` (two cells side by side, one torch thread each), 3 seeds per process,
    2×128 nets, batch 256: a CQL cell (N = 10) trains at 7–9 steps/s, 37–48 min for 20k steps, an offline
    SAC or BC cell at 53–65 steps/s (5–7 min); 392 min of training in all, 3.3 h of wall time. A fresh
    machine also builds the Hopper datasets first: 120k online SAC steps for the behaviour policy (1,683 s of
    training at 74 updates/s here, cached across levels) plus collection. ``--train-steps 8000`` is the quick
    pass (~1.4 h); the ``gpu`` budget is the long run.
    """
    return Plan(
        name="default",
        datasets=_datasets(hopper_sac_steps, hopper_collect_steps, idp_sac_steps, idp_collect_steps),
        train_steps=20_000,
        eval_every=1_000,
        log_every=250,
        checkpoint_every=2_000,
    )


def gpu_plan() -> Plan:
    """The longer run the issue welcomes where a GPU is available: paper-sized nets, 200k steps, 5 seeds."""
    return Plan(
        name="gpu",
        datasets=_datasets(HOPPER_SAC_STEPS, HOPPER_COLLECT_STEPS, 20_000, 100_000),
        seeds=(0, 1, 2, 3, 4),
        train_steps=200_000,
        hidden=(256, 256, 256),
        eval_every=5_000,
        eval_episodes=10,
        log_every=1_000,
        checkpoint_every=10_000,
        # bf16 autocast pays on GPU tensor cores (not on CPUs without AMX, hence off elsewhere).
        extra_train=("train.bf16=true",),
    )


def finetune_plan() -> Plan:
    """Offline-to-online fine-tuning on hopper-medium and inverteddoublependulum-medium, 3 seeds.

    Sized for about an hour of ONE core (one process at a time, one torch thread). Measured on the shared
    2-core Intel Xeon (AVX-512, no AMX) at load average 6, 3 seeds, 2×128, batch 256, N 10, Cal-QL on
    hopper-medium: 3.2 offline steps/s and 2.0 online env steps/s (each with its update), online SAC from
    scratch 17 env steps/s. An idle core runs the offline step about 2.8× faster (9 steps/s), so each
    fine-tuning cell takes about 2500/9 + 2500/(0.6–0.9 · 9) ≈ 10–12 min and a scratch cell about 1–2 min:
    about 45–55 min for the 6 cells plus evaluations.
    """
    hopper, _, idp, _ = _datasets(HOPPER_SAC_STEPS, HOPPER_COLLECT_STEPS, 20_000, 100_000)
    return Plan(
        name="finetune",
        datasets=(hopper, idp),
        methods=tuple(m for m in OPTIONAL_METHODS if m.phase != OFFLINE),
        train_steps=FT_TRAIN_STEPS,
        online_steps=FT_ONLINE_STEPS,
        online_eval_every=FT_EVAL_EVERY,
        eval_every=FT_EVAL_EVERY,
        eval_episodes=5,
        log_every=250,
        checkpoint_every=1_000,
    )


def tiny_plan() -> Plan:
    """CI: one seed, a few hundred steps, one tiny InvertedDoublePendulum dataset built in seconds."""
    extra = (
        "sac.hidden=[32,32]",
        "sac.start_steps=100",
        "sac.eval_every=200",
        "sac.eval_episodes=2",
        "ref_episodes=2",
        "collect.envs=2",
    )
    return Plan(
        name="tiny",
        datasets=(
            _dataset("InvertedDoublePendulum-v5", "inverteddoublependulum", "medium-replay", 400, 400, None, extra),
        ),
        seeds=(0,),
        train_steps=200,
        hidden=(32, 32),
        batch_size=64,
        eval_every=100,
        eval_episodes=2,
        log_every=50,
        checkpoint_every=100,
        n_actions=4,
        value_episodes=2,
        online_steps=100,  # only used when --methods asks for a fine-tuning method
        online_eval_every=10,  # 10% of online_steps: the dip window holds an evaluation
    )


def make_plan(budget: str, **changes: Any) -> Plan:
    """The named plan with CLI overrides applied (None values are ignored)."""
    from cql_runner.evidence.discrete_cells import DISCRETE_METHODS, discrete_plan, tiny_discrete_plan

    plans = {
        "default": default_plan,
        "tiny": tiny_plan,
        "gpu": gpu_plan,
        "discrete": discrete_plan,
        "tiny-discrete": tiny_discrete_plan,
        "finetune": finetune_plan,
    }
    if budget not in plans:
        raise ValueError(f"unknown budget {budget!r}; choose one of {', '.join(plans)}")
    plan = plans[budget]()
    changes = {k: v for k, v in changes.items() if v is not None}
    for key in ("sac_steps", "collect_steps"):
        if key in changes:
            value = changes.pop(key)
            plan = dataclasses.replace(
                plan, datasets=tuple(dataclasses.replace(d, **{key: value}) for d in plan.datasets)
            )
    if "extra_train" in changes:  # appended: a named plan's own overrides (the gpu plan's bf16) stay
        plan = dataclasses.replace(plan, extra_train=(*plan.extra_train, *changes.pop("extra_train")))
    for key in ("datasets", "methods"):
        if key in changes:
            wanted = list(changes.pop(key))
            known: tuple[Any, ...] = (
                plan.datasets if key == "datasets" else (*plan.methods, *METHODS, *DISCRETE_METHODS, *OPTIONAL_METHODS)
            )
            have: dict[str, Any] = {}
            for x in known:  # the plan's own spec first (bc is in both method lists)
                have.setdefault(x.key if key == "datasets" else x.name, x)
            unknown = [w for w in wanted if w not in have]
            if unknown:
                raise ValueError(f"unknown {key} {unknown}; choose from {', '.join(have)}")
            chosen: dict[str, Any] = {key: tuple(have[w] for w in wanted)}
            plan = dataclasses.replace(plan, **chosen)
    plan = dataclasses.replace(plan, **changes)
    for m in plan.methods:  # a method no dataset of the plan can train is a mistake, not a skip
        if not any(d.action_space in m.action_spaces for d in plan.datasets):
            spaces = sorted({d.action_space for d in plan.datasets})
            raise ValueError(f"method {m.name} cannot train on the plan's {'/'.join(spaces)}-action datasets; drop it")
    check_plan(plan)
    return plan


# ----- command lines -----------------------------------------------------------------------
def collect_args(ds: DatasetSpec, behaviour_cache: Path | None) -> list[str]:
    """cql-collect overrides; the id is left for cql-collect to derive (we only predict it)."""
    steps_key = "dqn.steps" if ds.action_space == "discrete" else "sac.steps"
    args = [
        f"env={ds.env_id}",
        f"level={ds.level}",
        f"{steps_key}={ds.sac_steps}",
        f"collect.steps={ds.collect_steps}",
        "progress=false",
        *ds.collect_extra,
    ]
    if behaviour_cache is not None:
        args.append(f"out_dir={behaviour_cache}")
    return args


def _list(values: Sequence[int]) -> str:
    return "[" + ",".join(str(v) for v in values) + "]"


def env_args(ds: DatasetSpec) -> list[str]:
    """How cql-train reads ``ds``: its own env config, or hopper-medium retargeted field by field.

    The reference scores are set to null so the dataset's own metadata (cql-collect measured a
    random and an expert policy) is what normalises the scores.
    """
    if ds.env_config is not None:
        return [f"env={ds.env_config}"]
    return [
        "env=hopper-medium",
        f"env.name={ds.key}",
        f"dataset.id={ds.dataset_id}",
        f"eval.env_id={ds.env_id}",
        "env.ref_min_score=null",
        "env.ref_max_score=null",
    ]


def train_args(plan: Plan, ds: DatasetSpec, method: MethodSpec, run_dir: Path, logger: str = "none") -> list[str]:
    """cql-train overrides for one (dataset, method): all seeds in one seed-vectorised process."""
    logger_args = ["logger=wandb", "logger.wandb.mode=offline"] if logger == "wandb-offline" else ["logger=none"]
    return [
        *env_args(ds),
        *method.overrides,
        *logger_args,
        # Hydra's own dir (.hydra/, the job log) goes inside the run dir, not to runs/<env>/<timestamp>/ in cwd.
        f"run_dir={run_dir}",
        f"hydra.run.dir={run_dir}",
        f"seeds={_list(plan.seeds)}",
        *step_args(plan, method),  # train.steps, eval.every and, for fine-tuning, online.steps
        f"train.batch_size={plan.batch_size}",
        f"train.log_every={plan.log_every}",
        f"train.checkpoint_every={plan.checkpoint_every}",
        "train.progress=false",
        "train.threads=1",
        f"network.hidden={_list(plan.hidden)}",
        f"cql.n_actions={plan.n_actions}",
        f"eval.episodes={plan.eval_episodes}",
        *plan.extra_train,
    ]


def peer_args(plan: Plan, ds: DatasetSpec, method: MethodSpec, run_dir: Path, venv: Path) -> list[str]:
    """``python -m cql_runner.peers run`` arguments for a peer method: the same budget as train_args."""
    if method.peer is None:
        raise ValueError(f"{method.name} is not a peer method")
    return [
        "run",
        "--algo",
        method.peer,
        "--venv",
        str(venv),
        "--run-dir",
        str(run_dir),
        "--seeds",
        *[str(s) for s in plan.seeds],
        "--steps",
        str(plan.train_steps),
        "--eval-every",
        str(plan.eval_every),
        "--eval-episodes",
        str(plan.eval_episodes),
        "--hidden",
        *[str(h) for h in plan.hidden],
        "--batch-size",
        str(plan.batch_size),
        "--n-actions",
        str(plan.n_actions),
        "--threads",
        "1",
        "--",
        *env_args(ds),
    ]


def seed_dirs(plan: Plan, run_dir: Path) -> list[Path]:
    """Per-seed run dirs as run.py lays them out: the run dir itself for one seed, else seed<k>/."""
    return [run_dir] if len(plan.seeds) == 1 else [run_dir / f"seed{s}" for s in plan.seeds]
