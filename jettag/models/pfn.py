"""Particle Flow Network (PFN): Komiske, Metodiev, Thaler, "Energy flow networks", JHEP 01 (2019) 121.

A deep set: a per-particle network Phi maps each particle to a latent vector, the vectors are
summed over the real particles of the jet, and a network F classifies the sum. The sum makes the
model permutation invariant and, since padded particles are left out of it, blind to padding.

The default sizes are the ParT paper's JetClass baseline: Phi (128, 128, 128), F (128, 128, 128),
ReLU, no batch normalization (86.1k parameters for 17 inputs and 10 classes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from jettag.models.base import JetTagger


def mlp(input_dim: int, dims: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for dim in dims:
        layers += [nn.Linear(input_dim, dim), nn.ReLU()]
        input_dim = dim
    return nn.Sequential(*layers)


class ParticleFlowNetwork(JetTagger):
    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        phi_dims: Sequence[int] = (128, 128, 128),
        f_dims: Sequence[int] = (128, 128, 128),
    ):
        super().__init__()
        self.phi = mlp(input_dim, phi_dims)
        self.f = mlp(phi_dims[-1], f_dims)
        self.build_head(f_dims[-1], num_classes)  # no hidden layers: F is the deep set's own network

    def forward_features(self, x: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The backbone: (B, N, C), (B, N, 4), (B, N) -> (B, D) output of F's hidden layers."""
        latent = self.phi(x).masked_fill(~mask.bool()[..., None], 0)  # (B, N, L); Phi(0) != 0, so mask
        return self.fc(self.f(latent.sum(1)))  # (B, L) -> (B, D); `fc` is empty
