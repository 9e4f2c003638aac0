"""One seed's share of a K-seed agent's checkpoint, and K single-seed checkpoints stacked back.

A run of K seeds side by side writes one ordinary single-seed checkpoint per seed, so either
kind of run can resume it. These functions convert between the stacked agent state and those
per-seed states; the agent only says how its tensors are laid out (:class:`StackedLayout`).

Seeds of one run may have taken different numbers of updates (online, each starts updating when
its own first episode ends): the stacked state then carries ``sat_out[k]``, the updates seed k
sat out, and seed k's own update and Adam step counts are the shared ones minus that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor


@dataclass(frozen=True)
class StackedLayout:
    """Members per seed of each stacked tensor: K seeds of m members each are rows k·m … (k+1)·m − 1
    of the leading dim; 0 marks a tensor shared by all seeds."""

    n_agents: int
    modules: dict[str, int]  # per state_dict entry
    optimizer: list[int]  # per optimizer parameter, in the optimizer's index order


class StackedAgent(Protocol):
    """What these functions need of an agent that trains K seeds in stacked tensors."""

    seeds: list[int]

    def stacked_layout(self) -> StackedLayout: ...

    def checkpoint_state(self) -> dict[str, Any]: ...

    def load_checkpoint_state(self, state: dict[str, Any]) -> None: ...


def _slice(tensor: Tensor, members: int, n_agents: int, k: int) -> Tensor:
    if members == 0:
        return tensor.clone()
    return tensor.reshape(n_agents, members, *tensor.shape[1:])[k].clone()


def _stack(parts: list[Tensor], members: int) -> Tensor:
    return parts[0] if members == 0 else torch.cat(parts, dim=0)


def _own_step(step: Any, lag: int) -> Any:
    return step if lag == 0 else step - lag


def seed_state(agent: StackedAgent, k: int) -> dict[str, Any]:
    """Seed k's checkpoint, in exactly the format a single-seed agent writes."""
    layout, state = agent.stacked_layout(), agent.checkpoint_state()
    n = layout.n_agents
    lag = int(state.get("sat_out", [0] * n)[k])
    modules = {name: _slice(t, layout.modules[name], n, k) for name, t in state["modules"].items()}
    opt = state["optimizer"]
    opt_state = {
        idx: {
            key: (_own_step(v, lag) if key == "step" else _slice(v, layout.optimizer[idx], n, k))
            for key, v in st.items()
        }
        for idx, st in opt["state"].items()
        # A seed that has not updated yet has no optimizer state, as in a single run.
        if "step" not in st or float(st["step"]) > lag
    }
    one = {
        "modules": modules,
        "optimizer": {"state": opt_state, "param_groups": opt["param_groups"]},
        "num_updates": int(state["num_updates"]) - lag,
        "seeds": [state["seeds"][k]],
    }
    if "generators" in state:  # an agent whose update draws no random numbers has none
        one["generators"] = [state["generators"][k]]
    return one


def load_seed_states(agent: StackedAgent, states: Sequence[dict[str, Any]]) -> None:
    """Inverse of :func:`seed_state`: stack K single-seed checkpoints into ``agent``."""
    seeds = [int(st["seeds"][0]) for st in states]
    if seeds != list(agent.seeds):
        raise ValueError(f"checkpoints are for seeds {seeds}, not {agent.seeds}")
    layout = agent.stacked_layout()
    modules = {
        name: _stack([st["modules"][name] for st in states], layout.modules[name]) for name in states[0]["modules"]
    }
    counts = [int(st["num_updates"]) for st in states]
    lags = [max(counts) - c for c in counts]
    per_seed = [st["optimizer"]["state"] for st in states]
    opt_state = {}
    for idx in sorted({i for st in per_seed for i in st}):
        # A seed with no state for a parameter has not stepped it yet: zero moments, as Adam starts.
        ref_k = next(k for k, st in enumerate(per_seed) if idx in st)
        ref = per_seed[ref_k][idx]
        entry: dict[str, Any] = {}
        for key, v in ref.items():
            if key == "step":
                entry[key] = _own_step(v, -lags[ref_k])
            else:
                parts = [st[idx][key] if idx in st else torch.zeros_like(v) for st in per_seed]
                entry[key] = _stack(parts, layout.optimizer[idx])
        opt_state[idx] = entry
    first = states[0]["optimizer"]
    stacked = {
        "modules": modules,
        "optimizer": {"state": opt_state, "param_groups": first["param_groups"]},
        "num_updates": max(counts),
        "seeds": seeds,
    }
    if any(lags):
        stacked["sat_out"] = lags
    if "generators" in states[0]:
        stacked["generators"] = [st["generators"][0] for st in states]
    agent.load_checkpoint_state(stacked)
