"""One optimizer step for some of the seeds of a stacked agent, each at its own Adam step count.

In the online phase each seed starts updating when its own first episode ends, so at a given
update some seeds of a vectorised run sit it out. A seed that sits out must be left exactly as
a single run of it would be: parameters, Adam moments, and Adam's step count, which sets the
bias correction. torch's Adam keeps one step count per parameter tensor, shared by the seeds
stacked in it, so the active seeds' rows are stepped through torch's functional Adam (the same
kernel ``Adam.step`` runs), each row block with its own count: the shared count minus the
updates that seed sat out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.optim.adam import adam


def _rows(tensor: torch.Tensor, members: int, k: int) -> torch.Tensor:
    """Seed k's block of a stacked tensor (a view: in-place changes reach the stacked tensor)."""
    return tensor[k * members : (k + 1) * members]


def _init_state(optimizer: torch.optim.Optimizer, group: dict, p: torch.Tensor) -> dict:
    """Adam's lazily created state for ``p``, as ``Adam._init_group`` creates it."""
    state = optimizer.state[p]
    if not state:
        on_device = group["capturable"] or group["fused"]
        state["step"] = (
            torch.zeros((), dtype=torch.float32, device=p.device)
            if on_device
            else torch.tensor(0.0, dtype=torch.get_default_dtype())
        )
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    return state


def masked_adam_step(
    optimizer: torch.optim.Optimizer, *, members: Sequence[int], active: Sequence[bool], sat_out: Sequence[int]
) -> None:
    """Step the rows of the ``active`` seeds of every parameter that has a gradient.

    ``members[i]``: rows per seed of the optimizer's i-th parameter (its index order);
    ``sat_out[k]``: updates seed k sat out so far, so its step count is the shared count minus
    that. The shared count advances by one (the step every seed takes when it updates).
    """
    if not isinstance(optimizer, torch.optim.Adam):
        raise TypeError(f"masked steps need torch.optim.Adam, not {type(optimizer).__name__}")
    seeds = [k for k, on in enumerate(active) if on]
    index = 0
    for group in optimizer.param_groups:
        if group["amsgrad"]:
            raise ValueError("masked steps do not support amsgrad")
        params, grads, avgs, sqs, steps = [], [], [], [], []
        for p in group["params"]:
            m = members[index]
            index += 1
            if p.grad is None:
                continue
            if m <= 0:
                raise ValueError("a parameter shared by all seeds cannot be stepped for some of them")
            state = _init_state(optimizer, group, p)
            for k in seeds:
                params.append(_rows(p.detach(), m, k))
                grads.append(_rows(p.grad, m, k))
                avgs.append(_rows(state["exp_avg"], m, k))
                sqs.append(_rows(state["exp_avg_sq"], m, k))
                steps.append(state["step"] - sat_out[k])  # a fresh tensor: adam() increments it
            state["step"] += 1
        if not params:
            continue
        beta1, beta2 = group["betas"]
        with torch.no_grad():
            adam(
                params,
                grads,
                avgs,
                sqs,
                [],
                steps,
                foreach=group["foreach"],
                capturable=group["capturable"],
                differentiable=False,
                fused=group["fused"],
                decoupled_weight_decay=group.get("decoupled_weight_decay", False),
                amsgrad=False,
                beta1=beta1,
                beta2=beta2,
                lr=group["lr"],
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=group["maximize"],
            )
