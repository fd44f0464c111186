"""Layers shared by jettag's models: batch norm with statistics from real particles only."""

from __future__ import annotations

import torch
from torch import nn


def masked_batch_norm(
    norm: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Batch norm over the last (channel) dimension of x (..., C) with statistics from the entries where
    mask (...) is True only; the others come out as zeros.

    A function of any batch-norm module rather than a module's own forward, so that it keeps working
    when Lightning's `sync_batchnorm` replaces the modules by `nn.SyncBatchNorm` (the statistics are
    then those of the real entries of all processes).
    """
    if norm.training:
        out = torch.zeros_like(x)
        out[mask] = norm(x[mask])
        return out
    return norm(x.reshape(-1, x.shape[-1])).view_as(x).masked_fill(~mask[..., None], 0)


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm over the last (channel) dimension with statistics from real particles only (used by
    ParticleNet and P-CNN); `masked_batch_norm(module, x, mask)` is the same for any batch-norm module."""

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:  # x (..., C), mask (...)
        if mask is None:  # plain BatchNorm1d on (M, C)
            return super().forward(x)
        return masked_batch_norm(self, x, mask)  # which calls this forward without a mask
