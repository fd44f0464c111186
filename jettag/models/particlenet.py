"""ParticleNet: Qu, Gouskos, "Jet tagging via particle clouds", Phys. Rev. D 101 (2020) 056019.

A jet is a point cloud. Each EdgeConv block links every particle to its k nearest neighbours,
turns each link into edge features [x_i, x_j - x_i], passes them through a shared MLP and
averages over the neighbours; a shortcut adds the block's input. The first block finds
neighbours in the (eta, phi) plane, later blocks in the feature space of the block before
(a dynamic graph). Global average pooling over the particles and an MLP classify the jet.

The default sizes are the published configuration, as in the ParT paper's JetClass baseline:
k = 16, EdgeConv MLPs (64, 64, 64), (128, 128, 128), (256, 256, 256), no fusion layer, FC 256
with dropout 0.1 (370k parameters for 17 inputs and 10 classes). `use_fusion=True` adds
weaver-core's optional fusion layer (concatenated block outputs -> 1x1 conv, BN, ReLU). A block
whose input width equals its output width adds its input unchanged (no shortcut layer), as in
weaver-core.

Channels-last throughout, so the 1x1 convolutions of the reference are `nn.Linear` layers.

First-block coordinates (`points`): the feature columns `part_deta`, `part_dphi` when the model is
built with its feature names and the set has them, as weaver-core's `pf_points` (squared
distances evaluated in the reference's order of operations, so the same neighbours are found);
otherwise eta and phi from the four-vectors `v`, phi differences wrapped (the same distances
for any jet, since deta_i - deta_j = +-(eta_i - eta_j)).

Neighbours of particles in jets with few particles (`neighbours`):
- "reference" (default): every real particle has exactly k neighbours, the k nearest other
  particles; in a jet of n <= k particles the k - n + 1 missing ones are padded slots, whose
  features are zero, so they add edges [x_i, -x_i]; the mean runs over k. This is weaver-core's
  rule (its k-NN takes the k nearest of all slots, padded ones shifted far away), with which the
  published ParticleNet models were trained, and jettag reproduces their scores with it.
- "real": only real particles are neighbours: a particle takes min(k, n - 1) of them and averages
  over those; a lone particle has no edges, so its EdgeConv output is the shortcut alone.
Either way the scores do not depend on how far a jet is padded (up to ties in distance).

Batch norm: statistics come from real particles and from the edges of real particles only
(padded centres never count). weaver-core's come from every slot of its fixed 128-particle
padding; in eval mode, with running statistics, both are the same affine map. When fine-tuning a
published model, `task.freeze_batchnorm=true` keeps its statistics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from jettag.models.base import JetTagger
from jettag.models.layers import MaskedBatchNorm1d, masked_batch_norm


def angular_distances(v: torch.Tensor) -> torch.Tensor:
    """(B, N, 4) four-vectors -> (B, N, N) squared distances in (eta, phi), phi differences wrapped."""
    px, py, pz, _ = v.float().unbind(-1)
    pt = torch.hypot(px, py)
    eta = torch.asinh(pz / pt.clamp(min=1e-20))  # finite even for particles along the beam
    phi = torch.atan2(py, px)
    deta = eta[:, :, None] - eta[:, None, :]
    dphi = torch.remainder(phi[:, :, None] - phi[:, None, :] + math.pi, 2 * math.pi) - math.pi
    return deta.square() + dphi.square()


def feature_distances(x: torch.Tensor) -> torch.Tensor:
    """(B, N, C) -> (B, N, N) squared Euclidean distances, through one batched matmul.

    Evaluated as (|x_i|^2 - 2 x_i.x_j) + |x_j|^2 and clamped at 0, weaver-core's k-NN distance in its
    order of operations, so that near ties are broken the same way.
    """
    sq = x.square().sum(-1)
    return ((sq[:, :, None] + -2 * (x @ x.transpose(1, 2))) + sq[:, None, :]).clamp(min=0)


def nearest_neighbours(distances: torch.Tensor, mask: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
    """Indices (B, N, k') of each particle's nearest real neighbours and which of them are valid.

    k' = min(k, N). A neighbour is valid when it is a real particle other than the centre and the
    centre is real; invalid slots (jets with at most k real particles, padded centres) are filled
    with arbitrary indices and must be ignored through the returned (B, N, k') mask.
    """
    n = distances.shape[-1]
    self_loop = torch.eye(n, dtype=torch.bool, device=mask.device)
    excluded = ~mask[:, None, :] | self_loop  # (B, N, N)
    _, idx = distances.masked_fill(excluded, math.inf).topk(min(k, n), dim=-1, largest=False)  # (B, N, k')
    valid = ~excluded.gather(-1, idx) & mask[:, :, None]
    return idx, valid


def reference_neighbours(distances: torch.Tensor, mask: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
    """weaver-core's rule: indices (B, N, k) of each particle's k nearest other particles, where indices
    N..N+k-1 stand for padded slots (zero features) filling in when a jet has k or fewer particles; and
    the edges that count, those of real centres (B, N, k).

    The padded slots are k extra candidates at the largest finite distance, so they come after every
    real particle and before the excluded ones (the particle itself, padding of the batch).
    """
    n = distances.shape[-1]
    self_loop = torch.eye(n, dtype=torch.bool, device=mask.device)
    excluded = ~mask[:, None, :] | self_loop  # (B, N, N)
    padded_slots = distances.new_full((*distances.shape[:2], k), torch.finfo(distances.dtype).max)
    candidates = torch.cat((distances.masked_fill(excluded, math.inf), padded_slots), dim=-1)  # (B, N, N + k)
    _, idx = candidates.topk(k, dim=-1, largest=False)  # (B, N, k)
    return idx, mask[:, :, None].expand_as(idx)


NEIGHBOUR_RULES = ("reference", "real")


class EdgeConv(nn.Module):
    """EdgeConv block: edge MLP on [x_i, x_j - x_i], mean over neighbours, shortcut, ReLU."""

    def __init__(self, input_dim: int, dims: Sequence[int], k: int, neighbours: str = "reference"):
        super().__init__()
        self.k = k
        self.neighbours = neighbours
        self.linears = nn.ModuleList()
        self.norms = nn.ModuleList()
        in_dim = 2 * input_dim
        for dim in dims:
            self.linears.append(nn.Linear(in_dim, dim, bias=False))  # the norm's shift is the bias
            self.norms.append(MaskedBatchNorm1d(dim))
            in_dim = dim
        self.shortcut = self.shortcut_norm = None
        if input_dim != dims[-1]:
            self.shortcut = nn.Linear(input_dim, dims[-1], bias=False)
            self.shortcut_norm = MaskedBatchNorm1d(dims[-1])

    def forward(self, x: torch.Tensor, distances: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.neighbours == "reference":
            idx, edges = reference_neighbours(distances, mask, self.k)  # (B, N, k)
            rows_of = F.pad(x, (0, 0, 0, self.k))  # (B, N + k, C): the padded slots N.. are zero particles
            count = self.k
        else:
            idx, edges = nearest_neighbours(distances, mask, self.k)  # (B, N, k'), k' = min(k, N)
            rows_of = x
            count = edges.sum(-1, keepdim=True).clamp(min=1)
        rows = torch.arange(x.shape[0], device=x.device)[:, None, None]
        neighbours = rows_of[rows, idx]  # (B, N, k, C)
        centres = x[:, :, None, :].expand_as(neighbours)
        h = torch.cat((centres, neighbours - centres), dim=-1)  # (B, N, k, 2C)
        for linear, norm in zip(self.linears, self.norms, strict=True):
            h = F.relu(masked_batch_norm(norm, linear(h), edges))  # edges that do not count come out as zeros
        aggregated = h.sum(2) / count  # (B, N, D) mean over the edges
        shortcut = (
            x if self.shortcut is None else masked_batch_norm(self.shortcut_norm, self.shortcut(x), mask)
        )
        return F.relu(shortcut + aggregated).masked_fill(~mask[..., None], 0)


class ParticleNet(JetTagger):
    """ParticleNet. `conv_params`: (k, MLP widths) per EdgeConv block; `fc_params`: the hidden FC layers
    between the pooled features and the final Linear (`jettag.models.base`); `neighbours` and `points`:
    see the module docstring; `feature_names`: the input columns (given by jettag's model builder), to
    find the `points` among them."""

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        conv_params: Sequence[tuple[int, Sequence[int]]] = (
            (16, (64, 64, 64)),
            (16, (128, 128, 128)),
            (16, (256, 256, 256)),
        ),
        fc_params: Sequence[Sequence] = ((256, 0.1),),
        use_fusion: bool = False,
        neighbours: str = "reference",
        points: Sequence[str] | None = ("part_deta", "part_dphi"),
        feature_names: Sequence[str] | None = None,
    ):
        super().__init__()
        if neighbours not in NEIGHBOUR_RULES:
            raise ValueError(f"model.neighbours={neighbours!r}; use one of {', '.join(NEIGHBOUR_RULES)}.")
        self.neighbours = neighbours
        # columns of x holding the first block's coordinates, or None: (eta, phi) from the four-vectors
        self.point_columns: list[int] | None = None
        if points and feature_names and all(p in feature_names for p in points):
            self.point_columns = [list(feature_names).index(p) for p in points]
        self.input_norm = MaskedBatchNorm1d(input_dim)
        self.blocks = nn.ModuleList()
        dim = input_dim
        for k, dims in conv_params:
            self.blocks.append(EdgeConv(dim, tuple(dims), int(k), neighbours))
            dim = dims[-1]
        self.fusion = None
        if use_fusion:
            fused = sum(dims[-1] for _, dims in conv_params)
            dim = min(max(fused // 128 * 128, 128), 1024)  # weaver-core's width rule: 448 -> 384
            self.fusion = nn.Linear(fused, dim, bias=False)
            self.fusion_norm = MaskedBatchNorm1d(dim)
        self.build_head(dim, num_classes, fc_params)

    def forward_features(self, x: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The backbone: (B, N, C), (B, N, 4), (B, N) -> (B, D) output of the hidden FC layers."""
        mask = mask.bool()
        h = masked_batch_norm(self.input_norm, x, mask)  # (B, N, C), zero on padding
        outputs = []
        for i, block in enumerate(self.blocks):
            if i > 0:
                distances = feature_distances(h)  # (B, N, N)
            elif self.point_columns is not None:
                distances = feature_distances(x[..., self.point_columns].float())
            else:
                distances = angular_distances(v)
            h = block(h, distances, mask)  # (B, N, D_block)
            outputs.append(h)
        if self.fusion is not None:
            h = F.relu(masked_batch_norm(self.fusion_norm, self.fusion(torch.cat(outputs, dim=-1)), mask))
        pooled = h.masked_fill(~mask[..., None], 0).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)  # (B, D)
        return self.fc(pooled)

    def layer_groups(self) -> list[tuple[str, ...]]:
        """Input batch norm, each EdgeConv block, the fusion layer, each hidden FC layer."""
        fusion = [("fusion", "fusion_norm")] if self.fusion is not None else []
        return [("input_norm",), *self._items("blocks"), *fusion, *self._items("fc")]
