"""P-CNN: a 1D ResNet over the pT-ordered particle list, as in CMS's DeepAK8 (CMS-DP-2017/049) and
the ParT paper's JetClass baseline.

The particles form a sequence, strongest first, and 1D convolutions of width 3 run along it. A stem
convolution widens the inputs, then ResNet stages follow; the first unit of every stage after the
first halves the sequence (stride 2). Global average pooling and an MLP classify the jet. The
model is order-dependent by design: it learns from the pT ordering.

The default sizes are the ParT paper's: stem 32, stages (64, 64), (64, 64), (128, 128), FC 512
with dropout 0.2 (354k parameters for 17 inputs and 10 classes). `conv_params` follows weaver-core:
the first entry is the stem width, each further entry one stage, one number per ResNet unit.

Padding sits at the end of the sequence (the data pipeline pads after the last real particle).
Padded positions are set to zero after every layer, so a convolution crossing the last real
particle sees zeros whether the jet is padded or not; batch-norm statistics and the pooling use
real positions only. After a stride-2 layer, output j (centred on input 2j) is real when input 2j
is. Scores therefore do not depend on how far a jet is padded.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from jettag.models.base import JetTagger
from jettag.models.layers import MaskedBatchNorm1d, masked_batch_norm


class ConvNorm(nn.Module):
    """Conv1d on channels-last input, then batch norm over real positions; padding comes out zero."""

    def __init__(self, input_dim: int, dim: int, kernel_size: int = 3, stride: int = 1, bias: bool = True):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv1d(input_dim, dim, kernel_size, stride=stride, padding=kernel_size // 2, bias=bias)
        self.norm = MaskedBatchNorm1d(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.conv(x.transpose(1, 2)).transpose(1, 2)  # (B, N', D), N' = ceil(N / stride)
        mask = mask[:, :: self.stride]
        return masked_batch_norm(self.norm, h, mask), mask


class ResNetUnit(nn.Module):
    """Two (conv, BN, ReLU) layers plus a shortcut (1x1 conv where the shape changes); no final ReLU."""

    def __init__(self, input_dim: int, dim: int, stride: int = 1):
        super().__init__()
        self.conv1 = ConvNorm(input_dim, dim, stride=stride)
        self.conv2 = ConvNorm(dim, dim)
        self.shortcut = None
        if input_dim != dim or stride != 1:
            self.shortcut = nn.Conv1d(input_dim, dim, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, out_mask = self.conv1(x, mask)
        h, _ = self.conv2(F.relu(h), out_mask)
        identity = x if self.shortcut is None else self.shortcut(x.transpose(1, 2)).transpose(1, 2)
        # the shortcut of a padded (zero) position is zero, so padding stays zero
        return F.relu(h) + identity, out_mask


class ParticleCNN(JetTagger):
    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        conv_params: Sequence[Sequence[int]] = ((32,), (64, 64), (64, 64), (128, 128)),
        fc_params: Sequence[Sequence] = ((512, 0.2),),
    ):
        super().__init__()
        (stem_dim,), *stages = conv_params
        self.input_norm = MaskedBatchNorm1d(input_dim)
        self.stem = ConvNorm(input_dim, stem_dim)
        self.units = nn.ModuleList()
        dim = stem_dim
        for i, stage in enumerate(stages):
            for j, width in enumerate(stage):
                self.units.append(ResNetUnit(dim, width, stride=2 if i > 0 and j == 0 else 1))
                dim = width
        self.build_head(dim, num_classes, fc_params)

    def forward_features(self, x: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The backbone: (B, N, C), (B, N, 4), (B, N) -> (B, D) output of the hidden FC layers."""
        mask = mask.bool()
        h, mask = self.stem(masked_batch_norm(self.input_norm, x, mask), mask)
        h = F.relu(h)  # (B, N, stem)
        for unit in self.units:
            h, mask = unit(h, mask)  # (B, N', D): N' halves at each stage after the first
        # padding is zero, so this is the mean over real positions
        pooled = h.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return self.fc(pooled)
