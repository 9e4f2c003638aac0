"""One seed's share of a K-seed agent's checkpoint, and K single-seed checkpoints stacked back.

A run of K seeds side by side writes one ordinary single-seed checkpoint per seed, so either
kind of run can resume it. These functions convert between the stacked agent state and those
per-seed states; the agent only says how its tensors are laid out (:class:`StackedLayout`).
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


def seed_state(agent: StackedAgent, k: int) -> dict[str, Any]:
    """Seed k's checkpoint, in exactly the format a single-seed agent writes."""
    layout, state = agent.stacked_layout(), agent.checkpoint_state()
    n = layout.n_agents
    modules = {name: _slice(t, layout.modules[name], n, k) for name, t in state["modules"].items()}
    opt = state["optimizer"]
    opt_state = {
        idx: {key: (v if key == "step" else _slice(v, layout.optimizer[idx], n, k)) for key, v in st.items()}
        for idx, st in opt["state"].items()
    }
    one = {
        "modules": modules,
        "optimizer": {"state": opt_state, "param_groups": opt["param_groups"]},
        "num_updates": state["num_updates"],
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
    first = states[0]["optimizer"]
    opt_state = {
        idx: {
            key: (
                v
                if key == "step"
                else _stack([st["optimizer"]["state"][idx][key] for st in states], layout.optimizer[idx])
            )
            for key, v in first["state"][idx].items()
        }
        for idx in first["state"]
    }
    stacked = {
        "modules": modules,
        "optimizer": {"state": opt_state, "param_groups": first["param_groups"]},
        "num_updates": states[0]["num_updates"],
        "seeds": seeds,
    }
    if "generators" in states[0]:
        stacked["generators"] = [st["generators"][0] for st in states]
    agent.load_checkpoint_state(stacked)
