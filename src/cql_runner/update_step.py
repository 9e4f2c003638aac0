"""One training step (sample a batch, update the agent), run eagerly or replayed as a CUDA graph.

With ``train.cuda_graph=true`` the whole step, from index sampling to the Polyak update, is
captured once and then replayed, so a step costs one graph launch instead of hundreds of
kernel launches. The capture needs every random draw to come from registered generators,
an optimizer built with ``capturable=True``, and no host synchronisation inside the step;
the agent and sampler are written to satisfy all three.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

from cql_runner.cql.agent import CQLAgent
from cql_runner.data.buffer import DeviceSampler

Metrics = dict[str, Tensor]

# Eager steps before the capture: they initialise the optimizer state, cuBLAS workspaces and
# autograd's buffers, which must not be allocated for the first time inside a capture.
WARMUP_STEPS = 3


class UpdateStep(Protocol):
    def __call__(self) -> Metrics: ...


class EagerStep:
    """Sample a batch on the device and take one agent update; metrics stay on the device."""

    def __init__(self, agent: CQLAgent, sampler: DeviceSampler, batch_size: int) -> None:
        self.agent, self.sampler, self.batch_size = agent, sampler, batch_size

    def __call__(self) -> Metrics:
        metrics = self.agent.update(self.sampler.sample(self.batch_size))
        mc = self.sampler.last_mc_returns()
        if mc is not None:
            metrics["q/dataset_mc_return"] = mc
        return metrics


class GraphBackend(Protocol):
    """Capture a step once and replay it; :class:`CudaGraphBackend` is the real one."""

    def warmup(self, step: Callable[[], Metrics]) -> Metrics: ...

    def capture(self, step: Callable[[], Metrics]) -> Metrics: ...

    def replay(self) -> None: ...


class CudaGraphBackend:
    def __init__(self, generators: list[torch.Generator]) -> None:
        self.generators = generators
        self.graph: torch.cuda.CUDAGraph | None = None
        self.side_stream: torch.cuda.Stream | None = None

    def warmup(self, step: Callable[[], Metrics]) -> Metrics:
        # Warm-up runs on a side stream, as the capture will (PyTorch's CUDA-graph recipe).
        if self.side_stream is None:
            self.side_stream = torch.cuda.Stream()
        self.side_stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.side_stream):
            out = step()
        torch.cuda.current_stream().wait_stream(self.side_stream)
        return out

    def capture(self, step: Callable[[], Metrics]) -> Metrics:
        graph = torch.cuda.CUDAGraph()
        for g in self.generators:
            # Each replay then advances these generators' Philox offsets, as an eager step would.
            graph.register_generator_state(g)
        with torch.cuda.graph(graph):
            out = step()
        self.graph = graph
        return out

    def replay(self) -> None:
        assert self.graph is not None
        self.graph.replay()


class GraphedStep:
    """The eager step, captured after a few warm-up steps and replayed from then on.

    The step reads everything it decides from the device (the BC warm-start switch is the
    agent's device-side update count), so one graph serves every step. The capture itself
    executes nothing, so the step that captures is replayed at once and every call is exactly
    one update.
    """

    def __init__(
        self,
        agent: CQLAgent,
        sampler: DeviceSampler,
        batch_size: int,
        backend: GraphBackend | None = None,
        warmup_steps: int = WARMUP_STEPS,
    ) -> None:
        self.eager = EagerStep(agent, sampler, batch_size)
        self.agent = agent
        self.backend = backend or CudaGraphBackend([*agent.generators, *sampler.generators])
        self.warmup_steps = warmup_steps
        self.warmed = 0
        self.static: Metrics | None = None

    def __call__(self) -> Metrics:
        if self.static is None:
            if self.warmed < self.warmup_steps:
                self.warmed += 1
                return self.backend.warmup(self.eager)
            # Gradients must be allocated by the capture itself, inside the graph's memory pool.
            self.agent.optimizer.zero_grad(set_to_none=True)
            self.static = self.backend.capture(self.eager)
        self.backend.replay()
        # The next replay overwrites these tensors; the trainer accumulates them before then.
        return dict(self.static)


def make_update_step(agent: CQLAgent, sampler: DeviceSampler, batch_size: int, cuda_graph: bool) -> UpdateStep:
    return GraphedStep(agent, sampler, batch_size) if cuda_graph else EagerStep(agent, sampler, batch_size)
