"""ParT's attention and transformer blocks.

Inputs are padded (B, N, D) with one additive mask, or packed tokens (T, D) with one mask per
bucket of a `Packing`: only the attention itself then pads, bucket by bucket. A mask carries the
padding (-inf for padded keys) and, with the interaction, the pair bias of each head (P-MHA).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from jettag.models.part.kernels import attention, dropout, linear
from jettag.models.part.packing import Packing
from jettag.models.part.path import ExecutionPath


class Attention(nn.Module):
    """Multi-head attention; the interaction bias and the padding are one additive float mask."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.dropout = dropout
        self.in_proj = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def _in_proj(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The packed q, k, v projection with the 1/sqrt(d) of the attention scores folded into q's rows."""
        scale = torch.ones(
            self.in_proj.weight.shape[0], dtype=self.in_proj.weight.dtype, device=self.in_proj.weight.device
        )
        scale[: scale.shape[0] // 3] = self.head_dim**-0.5
        return self.in_proj.weight * scale[:, None], self.in_proj.bias * scale

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, path: ExecutionPath
    ) -> torch.Tensor:
        """(b, Nq, D) scaled queries, (b, Nk, D) keys and values, mask (b, H or 1, Nq or 1, Nk) -> (b, Nq, D)."""
        batch, n_q, dim = q.shape
        q, k, v = (t.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2) for t in (q, k, v))
        p = self.dropout if self.training else 0.0
        out = attention(q, k, v, mask, p, self.training, path)  # (b, H, Nq, d)
        return out.transpose(1, 2).contiguous().view(batch, n_q, dim)

    def _out(self, out: torch.Tensor, scale: torch.Tensor, path: ExecutionPath) -> torch.Tensor:
        """The output projection with `scale` (D,) on its output channels folded into it."""
        return linear(out, self.out_proj.weight * scale[:, None], self.out_proj.bias * scale, path)

    def forward(
        self,
        x: torch.Tensor,
        masks: Sequence[torch.Tensor],
        packing: Packing | None,
        scale: torch.Tensor,
        path: ExecutionPath,
    ) -> torch.Tensor:
        """Self-attention of the particles."""
        qkv = linear(x, *self._in_proj(), path)  # (B, N, 3D) or (T, 3D)
        if packing is None:
            return self._out(self.attend(*qkv.chunk(3, dim=-1), masks[0], path), scale, path)
        out = [
            packing.unpad(self.attend(*packing.pad(qkv, k).chunk(3, dim=-1), mask, path), k)
            for k, mask in enumerate(masks)
        ]
        return self._out(torch.cat(out), scale, path)

    def forward_class(
        self,
        cls: torch.Tensor,
        keys_cls: torch.Tensor,
        keys: torch.Tensor,
        masks: Sequence[torch.Tensor],
        packing: Packing | None,
        scale: torch.Tensor,
        path: ExecutionPath,
    ) -> torch.Tensor:
        """Class attention: the query is `cls` (B, 1, D), keys and values come from [keys_cls, keys]."""
        dim = cls.shape[-1]
        w, b = self._in_proj()
        q = linear(cls, w[:dim], b[:dim], path)  # (B, 1, D)
        kv_cls = linear(keys_cls, w[dim:], b[dim:], path)  # (B, 1, 2D)
        kv = linear(keys, w[dim:], b[dim:], path)  # (B, N, 2D) or (T, 2D)
        if packing is None:
            kv = torch.cat((kv_cls, kv), dim=1)
            return self._out(self.attend(q, *kv.chunk(2, dim=-1), masks[0], path), scale, path)
        out = []
        for k, (bucket, mask) in enumerate(zip(packing.buckets, masks, strict=True)):
            jets = slice(bucket.start, bucket.stop)
            kv_k = torch.cat((kv_cls[jets], packing.pad(kv, k)), dim=1)  # (b, 1 + n, 2D)
            out.append(self.attend(q[jets], *kv_k.chunk(2, dim=-1), mask, path))
        return self._out(torch.cat(out), scale, path)


class Block(nn.Module):
    """Pre-norm transformer block with ParT's extra normalizations and learned scales.

    LayerNorm before attention and FFN, plus after the attention and after the first FFN layer;
    a learned scale per head on the attention output (channel c belongs to head c // head_dim)
    and a learned per-channel weight on the FFN residual.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_ratio: int = 4,
        dropout: float = 0.1,
        attn_dropout: float = 0.1,
        activation_dropout: float = 0.1,
    ):
        super().__init__()
        self.head_dim = dim // num_heads
        ffn_dim = dim * ffn_ratio
        self.pre_attn_norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, attn_dropout)
        self.post_attn_norm = nn.LayerNorm(dim)
        self.head_scale = nn.Parameter(torch.ones(num_heads))
        self.dropout = dropout
        self.pre_fc_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn_dim)  # then GELU
        self.act_dropout = activation_dropout
        self.post_fc_norm = nn.LayerNorm(ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.resid_scale = nn.Parameter(torch.ones(dim))

    def _head_scale(self) -> torch.Tensor:
        return self.head_scale.repeat_interleave(self.head_dim)  # (D,)

    def _finish(self, attended: torch.Tensor, residual: torch.Tensor, path: ExecutionPath) -> torch.Tensor:
        training = self.training
        x = dropout(self.post_attn_norm(attended), self.dropout, training, path) + residual
        h = linear(self.pre_fc_norm(x), self.fc1.weight, self.fc1.bias, path, gelu=True)
        h = dropout(h, self.act_dropout, training, path)
        h = linear(self.post_fc_norm(h), self.fc2.weight, self.fc2.bias, path)
        return torch.addcmul(dropout(h, self.dropout, training, path), self.resid_scale, x)

    def forward(
        self,
        x: torch.Tensor,
        masks: Sequence[torch.Tensor],
        path: ExecutionPath,
        packing: Packing | None = None,
    ) -> torch.Tensor:
        """`x` (B, N, D) with one mask, or packed tokens (T, D) with one mask per bucket of `packing`."""
        attended = self.attn(self.pre_attn_norm(x), masks, packing, self._head_scale(), path)
        return self._finish(attended, x, path)


class ClassBlock(Block):
    """Class attention (CaiT): the class token attends to [class token, particles]."""

    def forward(
        self,
        cls: torch.Tensor,
        x: torch.Tensor,
        masks: Sequence[torch.Tensor],
        path: ExecutionPath,
        packing: Packing | None = None,
    ) -> torch.Tensor:
        # Keys and values: the LayerNorm of [class token, particles], token by token. As in the
        # reference model, the query is the class token before normalization.
        keys_cls, keys = self.pre_attn_norm(cls), self.pre_attn_norm(x)
        attended = self.attn.forward_class(cls, keys_cls, keys, masks, packing, self._head_scale(), path)
        return self._finish(attended, cls, path)
