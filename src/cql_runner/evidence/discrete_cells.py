"""The suite's discrete-action cells: datasets cql-collect builds with its DQN, and the methods that fit them.

Discrete CQL (the preset's fixed α on Double DQN), offline Double DQN (the same agent with α = 0) and
behaviour cloning (``cql=bc``: cross-entropy of the dataset actions, greedy evaluation) train one
Q-network per seed. A method whose agent cannot act in a dataset's action space (offline SAC's tanh-Gaussian
actor on CartPole) is skipped for that dataset, with the reason in the suite's log.
"""

from __future__ import annotations

from collections.abc import Sequence

from cql_runner.evidence.suite_plan import DatasetSpec, MethodSpec, Plan

CONTINUOUS, DISCRETE = "continuous", "discrete"

DISCRETE_METHODS: tuple[MethodSpec, ...] = (
    # The env preset's settings (conf/env/<task>.yaml): cql.alpha 1, no Lagrange, Double DQN, Huber TD.
    MethodSpec("cql-discrete", (), action_spaces=(DISCRETE,)),
    MethodSpec("ddqn", ("cql.alpha=0", "cql.lagrange=false"), action_spaces=(DISCRETE,)),
    MethodSpec("bc", ("cql=bc",), action_spaces=(CONTINUOUS, DISCRETE)),
)

# Behaviour learner and network words per action space, for the page.
BEHAVIOUR = {CONTINUOUS: "SAC", DISCRETE: "DQN"}
NETWORKS = {CONTINUOUS: "actor and 2 critics", DISCRETE: "one Q-network per seed"}

# The DQN's greedy snapshots are evaluated on this many episodes every dqn_eval_every env steps:
# the snapshots are what `medium` picks from, so a finer grid than the default 5k lets a short
# run still find a snapshot near a third of the way to the expert.
DQN_EVAL_EVERY = 2_500


def discrete_dataset(
    env_id: str, short: str, level: str, dqn_steps: int, collect_steps: int, extra: Sequence[str] = ()
) -> DatasetSpec:
    """A dataset cql-collect builds with its DQN; trained with the registry's preset ``<short>-<level>``."""
    return DatasetSpec(
        f"{short}-{level}",
        env_id,
        level,
        f"cql_runner/{short}/{level}-v0",
        f"{short}-{level}",
        dqn_steps,
        collect_steps,
        (f"dqn.eval_every={DQN_EVAL_EVERY}", *extra),
        action_space=DISCRETE,
    )


def discrete_plan() -> Plan:
    """CartPole-v1 and MinAtar Breakout, medium, 3 seeds: sized for ~35 min of one CPU core, builds included.

    The presets' network (256×256) and batch (64). Costs measured on the project's 2-core Intel Xeon
    (AVX-512, no AMX) under load (nice 19, two other jobs on both cores), one torch thread:
    cql-collect's DQN trains at ~240 env steps/s on CartPole and ~170 on MinAtar Breakout (evaluations
    included) and writes ~2.4k (CartPole) / ~1.5k (Breakout) transitions/s; a 3-seed discrete CQL or
    Double DQN process trains at 71 steps/s on CartPole and 36 on Breakout (evaluation every 1000 steps on
    5 episodes included), BC about twice as fast. So: builds ~11 min (30k + 60k DQN steps, 100k
    transitions each), training ~21 min (12k steps × 3 methods × 2 datasets), value checks and start-up
    ~2 min. ``--train-steps 20000`` (the hand-run page's budget) adds ~14 min.
    """
    return Plan(
        name="discrete",
        datasets=(
            discrete_dataset("CartPole-v1", "cartpole", "medium", 30_000, 100_000),
            # MinAtar has no time limit: episodes are capped at 2000 steps as the preset evaluates them.
            discrete_dataset(
                "MinAtar/Breakout-v1", "minatar-breakout", "medium", 60_000, 100_000, ("max_episode_steps=2000",)
            ),
        ),
        methods=DISCRETE_METHODS,
        train_steps=12_000,
        hidden=(256, 256),
        batch_size=64,
        eval_every=1_000,
        eval_episodes=5,
        log_every=250,
        checkpoint_every=4_000,
        value_episodes=10,
    )


def tiny_discrete_plan() -> Plan:
    """CI: one seed, a tiny CartPole dataset built in seconds, the three discrete methods for 200 steps."""
    extra = ("dqn.hidden=[32,32]", "dqn.start_steps=100", "dqn.eval_episodes=2", "ref_episodes=2", "collect.envs=2")
    ds = discrete_dataset("CartPole-v1", "cartpole", "medium-replay", 600, 600, extra)
    return Plan(
        name="tiny-discrete",
        datasets=(ds,),
        methods=DISCRETE_METHODS,
        seeds=(0,),
        train_steps=200,
        hidden=(32, 32),
        batch_size=32,
        eval_every=100,
        eval_episodes=2,
        log_every=50,
        checkpoint_every=100,
        value_episodes=2,
    )


def not_applicable(method: MethodSpec, ds: DatasetSpec) -> str | None:
    """Why ``method`` is not run on ``ds`` (its agent cannot act in the dataset's action space), else None."""
    if ds.action_space in method.action_spaces:
        return None
    if method.peer is not None:
        return f"the peer method {method.name} trains continuous-action agents only"
    kinds = " or ".join(method.action_spaces)
    why = f"{method.name} trains an agent for {kinds} actions and {ds.key} has {ds.action_space} actions"
    if ds.action_space != DISCRETE:
        return why
    fitting = ", ".join(m.name for m in DISCRETE_METHODS if DISCRETE in m.action_spaces)
    return f"{why} (methods for it: {fitting})"


# ----- words for the page (plan.json and datasets.json as written by the suite) ------------------------
def _spaces(entries: Sequence[dict[str, object]]) -> list[str]:
    """The action spaces in order of first appearance (records without the key are continuous)."""
    seen: list[str] = []
    for e in entries:
        space = str(e.get("action_space") or CONTINUOUS)
        if space not in seen:
            seen.append(space)
    return seen or [CONTINUOUS]


def _plan_spaces(plan: dict[str, object]) -> list[str]:
    """The action spaces of a plan's datasets (plan.json as the suite writes it)."""
    datasets = plan.get("datasets")
    return _spaces(list(datasets) if isinstance(datasets, (list, tuple)) else [])


def network_words(plan: dict[str, object]) -> str:
    """'actor and 2 critics', 'one Q-network per seed', or both with the action spaces named."""
    spaces = _plan_spaces(plan)
    if len(spaces) == 1:
        return NETWORKS[spaces[0]]
    return "; ".join(f"{NETWORKS[s]} on {s} actions" for s in spaces)


def behaviour_words(datasets: dict[str, dict[str, object]]) -> str:
    """'SAC behaviour policy', 'DQN behaviour policy', or 'SAC or DQN behaviour policy' for a mixed suite."""
    names = [BEHAVIOUR[s] for s in _spaces(list(datasets.values()))]
    return f"{' or '.join(names)} behaviour policy"


def logsumexp_words(plan: dict[str, object]) -> str:
    """How the CQL term's logsumexp is formed: N sampled actions (continuous), exact (discrete), or both."""
    spaces = _plan_spaces(plan)
    words = {CONTINUOUS: f"CQL N = {plan.get('n_actions')}", DISCRETE: "CQL logsumexp exact over all actions"}
    if len(spaces) == 1:
        return words[spaces[0]]
    return "; ".join(f"{words[s]} on {s} actions" for s in spaces)


def page_title(plan: dict[str, object]) -> str:
    """The page's heading: the comparison its plan makes."""
    spaces = _plan_spaces(plan)
    methods = plan.get("methods")
    entries = list(methods) if isinstance(methods, (list, tuple)) else []
    phases = {str(m.get("phase", "offline")) for m in entries if isinstance(m, dict)}
    if phases and "offline" not in phases:
        return "Evidence: offline-to-online fine-tuning with CQL and Cal-QL, against online SAC from scratch"
    if spaces == [DISCRETE]:
        return "Evidence: discrete CQL against offline Double DQN and behaviour cloning"
    if DISCRETE in spaces:
        return "Evidence: CQL against offline SAC, offline Double DQN and behaviour cloning"
    return "Evidence: CQL against offline SAC and behaviour cloning"


def discrete_value_note(checks: Sequence[dict[str, object]]) -> list[str]:
    """How the value check reads for discrete agents, when the page has any."""
    if not any(c.get("action_space") == DISCRETE for c in checks):
        return []
    return [
        "Discrete agents (one Q-network per seed, so min and mean over critics coincide): Q̂(s0, a0) at the "
        "first action a0 of the evaluation policy (greedy in Q, ε-greedy at `discrete.eval_epsilon`) against "
        "the discounted Monte-Carlo return of that policy from the same reset states; 'Q̂(dataset s0)' is Q̂ "
        "at the greedy action. BC's outputs are policy logits, not values, so its Q̂ columns are '–'.",
        "",
    ]
