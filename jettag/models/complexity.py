"""Model size and cost: parameters, and multiply-adds (MACs) per jet.

MACs are measured, not derived: one forward pass of a dummy jet through
`torch.utils.flop_counter.FlopCounterMode`, which counts the FLOPs of matrix products and
convolutions (2 per multiply-add); MACs = FLOPs / 2. Element-wise work (normalizations,
activations, distances built without a matmul) is not counted, as in the usual published figures
(the ParT paper's "FLOPs" column matches multiply-adds counted this way).

The dummy jet has all `num_particles` particles real, so the figure is the cost at that length;
ParT's pair embedding runs on the N(N+1)/2 pairs i <= j.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    """FLOPs of the CPU fused attention kernel, which FlopCounterMode does not know: Q K^T and A V."""
    *batch, n_query, head_dim = query_shape
    n_key, value_dim = key_shape[-2], value_shape[-1]
    return 2 * math.prod(batch) * n_query * n_key * (head_dim + value_dim)


_CUSTOM_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops}


def dummy_jet(num_features: int, num_particles: int = 128, seed: int = 0):
    """One jet (1, N, C) features, (1, N, 4) massless four-vectors around one axis, (1, N) all-real mask."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, num_particles, num_features, generator=g)
    pt = torch.rand(1, num_particles, generator=g) * 50 + 1
    eta = torch.randn(1, num_particles, generator=g) * 0.3
    phi = torch.randn(1, num_particles, generator=g) * 0.3
    v = torch.stack([pt * phi.cos(), pt * phi.sin(), pt * eta.sinh(), pt * eta.cosh()], dim=-1)
    return x, v, torch.ones(1, num_particles, dtype=torch.bool)


def count_macs(model: nn.Module, num_features: int, num_particles: int = 128) -> int:
    """Multiply-adds of one forward pass (eval mode) of one jet of `num_particles` real particles."""
    device = next(model.parameters()).device
    x, v, mask = (t.to(device) for t in dummy_jet(num_features, num_particles))
    was_training = model.training
    model.eval()
    try:
        # with autograd on: FlopCounterMode's module tracker fails on views made under no_grad
        with FlopCounterMode(display=False, custom_mapping=_CUSTOM_FLOPS) as counter:
            model(x, v, mask)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
