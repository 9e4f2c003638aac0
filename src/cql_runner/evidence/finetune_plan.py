"""The fine-tuning methods of the evidence suite: which phases each runs and their cql-train step keys.

A method's ``phase`` (on its MethodSpec) decides its schedule; everything else about a run (network,
batch, seeds, data) comes from the plan, as for the offline methods:

- ``offline``: ``train.steps`` gradient steps on the dataset (the original suite);
- ``finetune``: the same offline pre-training, then ``online.steps`` env steps of online fine-tuning;
- ``scratch``: no offline steps, only the ``online.steps`` env steps (online RL from scratch), so it
  sees exactly as many env steps as the fine-tuned methods.

Kept apart from suite_plan so the plan stays one readable object and these rules one small module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # suite_plan imports this module: only the types from there
    from cql_runner.evidence.suite_plan import MethodSpec, Plan

OFFLINE, FINETUNE, SCRATCH = "offline", "finetune", "scratch"
PHASES = (OFFLINE, FINETUNE, SCRATCH)


def is_online(method: MethodSpec) -> bool:
    """Has an online phase (fine-tuned or from scratch)."""
    return method.phase in (FINETUNE, SCRATCH)


def offline_steps(plan: Plan, method: MethodSpec) -> int:
    return 0 if method.phase == SCRATCH else plan.train_steps


def planned_steps(plan: Plan, method: MethodSpec) -> int:
    """The step summary.json reports when the run is done: offline steps + online env steps (one axis)."""
    return offline_steps(plan, method) + (plan.online_steps if is_online(method) else 0)


def check_plan(plan: Plan) -> None:
    """A plan that asks for an online method needs an online budget; raises ValueError naming the fix."""
    online = [m.name for m in plan.methods if is_online(m)]
    if online and plan.online_steps <= 0:
        raise ValueError(
            f"methods {online} fine-tune online but the plan has online_steps={plan.online_steps}; "
            "pass --online-steps N (or --budget finetune)"
        )
    if online and plan.online_eval_every <= 0:
        raise ValueError(f"online_eval_every must be > 0 (got {plan.online_eval_every}); pass --online-eval-every N")


def step_args(plan: Plan, method: MethodSpec) -> list[str]:
    """The cql-train keys that set a method's schedule and how often it is evaluated.

    ``eval.every`` is one key for both phases of a run (gradient steps offline, env steps online), so a
    method with an online phase is evaluated every ``online_eval_every`` steps in both: the pre-switch
    score is then the evaluation at the end of pre-training, and the dip window holds evaluations.
    """
    if not is_online(method):
        return [f"train.steps={plan.train_steps}", f"eval.every={plan.eval_every}"]
    return [
        f"train.steps={offline_steps(plan, method)}",
        f"online.steps={plan.online_steps}",
        f"eval.every={plan.online_eval_every}",
    ]
