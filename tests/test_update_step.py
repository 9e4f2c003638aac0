"""The training step, eager and graph-replayed.

On CPU a stand-in backend mimics CUDA-graph semantics (a capture executes nothing; a replay
rewrites the same output tensors), which checks the warm-up, BC and counter plumbing. On a
GPU the real capture is checked against eager steps.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import Tensor

from cql_runner.config import CQLConfig, NetworkConfig
from cql_runner.cql.agent import CQLAgent
from cql_runner.data.buffer import DeviceSampler
from cql_runner.data.types import DatasetMeta, OfflineData
from cql_runner.update_step import EagerStep, GraphedStep, make_update_step

OBS, ACT = 3, 2
Metrics = dict[str, Tensor]


def _data(size: int = 200, seed: int = 0) -> OfflineData:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(size, OBS)).astype(np.float32)
    return OfflineData(
        obs,
        rng.uniform(-0.9, 0.9, (size, ACT)).astype(np.float32),
        rng.normal(size=size).astype(np.float32),
        obs + 0.1,
        (rng.uniform(size=size) < 0.05).astype(np.float32),
        np.zeros(size, np.float32),
        np.arange(0, size, 50),
        DatasetMeta("synthetic"),
    )


def _setup(
    device: str = "cpu", capturable: bool = False, seeds: tuple[int, ...] = (0, 1), compile: bool = False, **cql: object
) -> tuple[CQLAgent, DeviceSampler]:
    cfg = CQLConfig(n_actions=3, **cql)  # type: ignore[arg-type]
    agent = CQLAgent(
        OBS,
        ACT,
        list(seeds),
        NetworkConfig(hidden=[16, 16]),
        cfg,
        device=device,
        capturable=capturable,
        compile=compile,
    )
    return agent, DeviceSampler(_data(), list(seeds), device, discount=cfg.discount)


class StandInGraph:
    """CUDA-graph semantics without CUDA: capture runs the step on a throwaway copy of the
    state only to learn the outputs' shapes, and every replay writes into those outputs."""

    def __init__(self, agent: CQLAgent, sampler: DeviceSampler) -> None:
        self.agent, self.sampler = agent, sampler
        self.step: Callable[[], Metrics] | None = None
        self.static: Metrics = {}
        self.captures = self.replays = self.warmups = 0

    def warmup(self, step: Callable[[], Metrics]) -> Metrics:
        self.warmups += 1
        return step()

    def capture(self, step: Callable[[], Metrics]) -> Metrics:
        saved = (copy.deepcopy(self.agent.checkpoint_state()), copy.deepcopy(self.sampler.state_dict()))
        self.static = {k: torch.full_like(v, float("nan")) for k, v in step().items()}
        self.agent.load_checkpoint_state(saved[0])
        self.sampler.load_state_dict(saved[1])
        self.step, self.captures = step, self.captures + 1
        return self.static

    def replay(self) -> None:
        assert self.step is not None
        for name, value in self.step().items():
            self.static[name].copy_(value)
        self.replays += 1


def _run(step: Callable[[], Metrics], n: int) -> list[Metrics]:
    # Clone at once: a graph's outputs are overwritten by the next replay.
    return [{k: v.clone() for k, v in step().items()} for _ in range(n)]


# The step's conventions of cql (issue 14) go through the graphed path too: α′ projection, both
# Lagrange forms, the mean target action, per-sample clips, a separate α′ learning rate.
CONVENTIONS = [
    {},
    {"lagrange_form": "raw", "target_action": "mean", "clip_diff_max": 3.5, "alpha_prime_lr": 1e-2},
    {"tau": 0.0, "alpha_prime_init": 0.99e6, "alpha_prime_lr": 0.1},  # α′ pinned at the cap
]


@pytest.mark.parametrize("conventions", CONVENTIONS, ids=["default", "raw-mean-clip", "alpha-prime-cap"])
@pytest.mark.parametrize("bc_steps", [0, 5])
def test_graphed_step_equals_eager_steps(bc_steps: int, conventions: dict) -> None:
    torch.manual_seed(0)
    agent_e, sampler_e = _setup(bc_steps=bc_steps, **conventions)
    agent_g, sampler_g = _setup(bc_steps=bc_steps, **conventions)
    backend = StandInGraph(agent_g, sampler_g)
    graphed = GraphedStep(agent_g, sampler_g, batch_size=8, backend=backend, warmup_steps=2)

    eager_metrics = _run(EagerStep(agent_e, sampler_e, batch_size=8), 12)
    graphed_metrics = _run(graphed, 12)

    # Eager only for the warm-up: the graph reads the BC switch from the device, so it serves the
    # warm start too (here bc_steps=5 switches inside the replayed steps).
    assert backend.warmups == 2 and backend.captures == 1
    assert backend.replays == 12 - backend.warmups
    assert agent_g.num_updates == agent_e.num_updates == 12
    for me, mg in zip(eager_metrics, graphed_metrics):
        assert me.keys() == mg.keys() and "q/dataset_mc_return" in mg
        for name in me:
            torch.testing.assert_close(mg[name], me[name], rtol=0, atol=0, msg=name)
    for (name, pe), pg in zip(agent_e.state_dict().items(), agent_g.state_dict().values()):
        torch.testing.assert_close(pg, pe, rtol=0, atol=0, msg=name)


def test_make_update_step_picks_eager_unless_asked() -> None:
    agent, sampler = _setup()
    assert isinstance(make_update_step(agent, sampler, 8, cuda_graph=False), EagerStep)
    assert isinstance(make_update_step(agent, sampler, 8, cuda_graph=True), GraphedStep)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("compile", [False, True], ids=["eager-losses", "compiled-losses"])
def test_cuda_graph_step_matches_eager_on_gpu(compile: bool, tmp_path, monkeypatch) -> None:
    """The real capture, of the eager or the compiled loss graph: same losses and weights as
    eager steps, to fp32 rounding."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch.backends.cuda.matmul.allow_tf32 = False
    agent_e, sampler_e = _setup("cuda", capturable=True)
    agent_g, sampler_g = _setup("cuda", capturable=True, compile=compile)
    eager = _run(EagerStep(agent_e, sampler_e, batch_size=64), 40)
    graphed = _run(GraphedStep(agent_g, sampler_g, batch_size=64), 40)
    for i, (me, mg) in enumerate(zip(eager, graphed)):
        for name in me:
            torch.testing.assert_close(mg[name], me[name], rtol=1e-4, atol=1e-5, msg=f"step {i}: {name}")
    for (name, pe), pg in zip(agent_e.state_dict().items(), agent_g.state_dict().values()):
        torch.testing.assert_close(pg, pe, rtol=1e-4, atol=1e-5, msg=name)
