"""Q-networks of the discrete agent, for K seeds side by side: an MLP, or the Nature-DQN CNN.

Every parameter has the seed as its leading dimension, so seed k's share is a slice. The CNN
runs the K seeds as the K groups of grouped convolutions (a group sees only its own input
channels and weights), so seed k computes exactly what a single-seed network would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cql_runner.networks import EnsembleMLP

# Mnih et al. (2015): 32 8×8/4, 64 4×4/2, 64 3×3/1 convolutions, then 512 units.
NATURE_CONVS = ((32, 8, 4), (64, 4, 2), (64, 3, 1))
NATURE_HIDDEN = 512


class EnsembleNatureCNN(nn.Module):
    """(K, B, C, H, W) uint8 frames → (K, B, out_dim); frames are scaled to [0, 1] on the fly."""

    def __init__(self, members: int, in_shape: Sequence[int], out_dim: int) -> None:
        super().__init__()
        self.members = members
        channels, height, width = (int(d) for d in in_shape)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.strides: list[int] = []
        c_in = channels
        for c_out, kernel, stride in NATURE_CONVS:
            self.weights.append(nn.Parameter(torch.empty(members, c_out, c_in, kernel, kernel)))
            self.biases.append(nn.Parameter(torch.empty(members, c_out)))
            self.strides.append(stride)
            height, width = (height - kernel) // stride + 1, (width - kernel) // stride + 1
            c_in = c_out
        if height < 1 or width < 1:
            raise ValueError(f"frames of shape {tuple(in_shape)} are too small for the Nature-DQN CNN (84×84 expected)")
        self.features = c_in * height * width
        self.head = EnsembleMLP(members, self.features, out_dim, [NATURE_HIDDEN])

    @torch.no_grad()
    def init_member(self, member: int, generator: torch.Generator) -> None:
        """torch's default init (U(±1/√fan_in)) from the seed's own generator."""
        for w, b in zip(self.weights, self.biases):
            bound = 1.0 / math.sqrt(w[member].numel() / w.shape[1])
            w[member].copy_((torch.rand(w.shape[1:], generator=generator) * 2 - 1) * bound)
            b[member].copy_((torch.rand(b.shape[1:], generator=generator) * 2 - 1) * bound)
        self.head.init_member(member, generator, orthogonal=False)

    def forward(self, frames: Tensor) -> Tensor:
        k, b = frames.shape[:2]
        # (K, B, C, H, W) → (B, K·C, H, W): seed k owns channel group k.
        x = frames.transpose(0, 1).reshape(b, -1, *frames.shape[-2:])
        # With gradients, the 8×8 stride-4 conv runs as a 2×2 stride-1 conv over 4×4 pixel blocks: the
        # same sums, and oneDNN's weight gradient of the 2×2 form ran 4× faster on a Xeon CPU (its forward
        # was no faster, so passes without gradients keep the strided conv; scripts/bench_discrete.py).
        first = None
        if torch.is_grad_enabled() and self.weights[0].requires_grad:
            first = space_to_depth_weight(self.weights[0], self.strides[0], x.shape[-2:])
        if first is not None:
            x = pixel_blocks(x, self.strides[0])
        x = x.to(torch.float32).div_(255.0)
        for i, (w, bias, stride) in enumerate(zip(self.weights, self.biases, self.strides)):
            if i == 0 and first is not None:
                w, stride = first, 1
            x = F.relu(F.conv2d(x, w.reshape(-1, *w.shape[2:]), bias.reshape(-1), stride=stride, groups=k))
        x = x.reshape(b, k, -1).transpose(0, 1)  # (K, B, features)
        return self.head(x)


def space_to_depth_weight(weight: Tensor, stride: int, size: Sequence[int]) -> Tensor | None:
    """(K, O, C, k, k) weights of a stride-s conv as (K, O, C·s², k/s, k/s) weights of a stride-1 conv
    over ``F.pixel_unshuffle(x, s)``, whose channel c·s² + i·s + j is pixel (i, j) of each s×s block
    of channel c; None where the rewrite does not apply (k or the frame size not a multiple of s)."""
    kernel = weight.shape[-1]
    if stride < 2 or kernel % stride or any(int(n) % stride for n in size):
        return None
    m, o, c, a = weight.shape[0], weight.shape[1], weight.shape[2], kernel // stride
    blocks = weight.reshape(m, o, c, a, stride, a, stride).permute(0, 1, 2, 4, 6, 3, 5)
    return blocks.reshape(m, o, c * stride * stride, a, a)


def pixel_blocks(x: Tensor, s: int) -> Tensor:
    """``F.pixel_unshuffle(x, s)`` as one reshape-permute copy: (B, C, H, W) → (B, C·s², H/s, W/s).
    On uint8 frames torch's pixel_unshuffle took 6× longer than this copy."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // s, s, w // s, s).permute(0, 1, 3, 5, 2, 4).reshape(b, c * s * s, h // s, w // s)


def make_q_network(
    members: int, obs_shape: Sequence[int], out_dim: int, encoder: str, hidden: Sequence[int], layer_norm: bool
) -> EnsembleNatureCNN | EnsembleMLP:
    """An MLP on flat observations, or the Nature CNN on (C, H, W) uint8 frame stacks."""
    if encoder == "nature_cnn":
        if len(obs_shape) != 3:
            raise ValueError(f"discrete.encoder=nature_cnn needs (C, H, W) frame stacks, not {tuple(obs_shape)}")
        return EnsembleNatureCNN(members, obs_shape, out_dim)
    return EnsembleMLP(members, int(math.prod(obs_shape)), out_dim, list(hidden), layer_norm)
