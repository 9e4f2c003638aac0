"""Is a dataset's Monte-Carlo return column consistent with TD learning on it?

Fits Q(s, a) by SARSA on a Minari dataset (the TD target's next action is the dataset's own next
action, so the fixed point is the behaviour policy's value) with the critic setup of the evidence
budget (2×128 MLP, Adam 3e-4, batch 256, γ 0.99, Polyak 5e-3), and prints the batch mean of Q on
dataset pairs beside the discounted return-to-go of the same pairs. If the two meet, the
``q/dataset_mc_return`` that cql-train logs is what a TD critic of the behaviour converges to, and a
CQL critic above it over-estimates rather than mis-measures.

    MINARI_DATASETS_PATH=STORE python scripts/probe_behaviour_value.py mujoco/hopper/medium-v0 --steps 20000
"""

from __future__ import annotations

import argparse
import json
import time

import minari
import numpy as np
import torch

from cql_runner.data.minari_source import flatten_dataset


def transitions(dataset_id: str, discount: float) -> dict[str, torch.Tensor]:
    """(s, a, r, terminal, s′, a′, return-to-go) of every step that has a next action in its episode, read
    the way cql-train reads the dataset (actions rescaled to [-1, 1]) and with the return-to-go column it logs."""
    data = flatten_dataset(minari.load_dataset(dataset_id))
    n = data.size
    mc = data.returns_to_go(discount)
    # a′ is the next row's action when that row continues the episode; after a termination it is never
    # used (masked), and the last step of a truncated episode has none to back up from: dropped.
    continues = np.ones(n, dtype=bool)
    continues[data.episode_starts[1:] - 1] = False
    continues[-1] = False
    keep = np.flatnonzero(continues | (data.terminals > 0))
    next_act = data.actions[np.minimum(keep + 1, n - 1)]
    cols = {
        "obs": data.observations[keep],
        "act": data.actions[keep],
        "rew": data.rewards[keep],
        "term": data.terminals[keep],
        "next_obs": data.next_observations[keep],
        "next_act": next_act,
        "mc": mc[keep],
    }
    return {k: torch.as_tensor(np.asarray(v, dtype=np.float32)) for k, v in cols.items()}


def critic(in_dim: int, hidden: int) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(in_dim, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, 1),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset_id")
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--log-every", type=int, default=2_000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    discount, rate, batch = 0.99, 5e-3, 256
    d = transitions(args.dataset_id, discount)
    n = len(d["rew"])
    q = critic(d["obs"].shape[1] + d["act"].shape[1], 128)
    target = critic(d["obs"].shape[1] + d["act"].shape[1], 128)
    target.load_state_dict(q.state_dict())
    opt = torch.optim.Adam(q.parameters(), lr=3e-4)
    print(json.dumps({"dataset": args.dataset_id, "transitions": n, "mc_mean": round(d["mc"].mean().item(), 2)}))
    start = time.time()
    for step in range(1, args.steps + 1):
        i = torch.randint(0, n, (batch,))
        with torch.no_grad():
            next_q = target(torch.cat([d["next_obs"][i], d["next_act"][i]], -1)).squeeze(-1)
            y = d["rew"][i] + discount * (1 - d["term"][i]) * next_q
        q_data = q(torch.cat([d["obs"][i], d["act"][i]], -1)).squeeze(-1)
        loss = 0.5 * ((q_data - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for src, dst in zip(q.parameters(), target.parameters(), strict=True):
                dst.lerp_(src, rate)
        if step % args.log_every == 0:
            row = {"step": step, "q_data": q_data.mean().item(), "mc_return": d["mc"][i].mean().item()}
            print(
                json.dumps(
                    {k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}
                    | {"wall_s": round(time.time() - start)}
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
