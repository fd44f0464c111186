"""Particle Transformer (ParT): Qu, Li, Qian, "Particle Transformer for Jet Tagging", ICML 2022.

A jet is a set of particles. Each particle's features are embedded by an MLP; every pair of
particles gets four interaction features (ln kT, ln z, ln Delta, ln m^2, see
`jettag.features.pairwise`) embedded into one bias per attention head. Particle-attention blocks
add that bias to their attention logits (P-MHA); class-attention blocks then let a class token
attend to the particles, and a linear head classifies the token.

Inputs are channels-last: `x` (B, N, C) standardized particle features, `v` (B, N, 4) four-vectors
(px, py, pz, E), `mask` (B, N) True for real particles. Padding is excluded everywhere: from the
batch-norm statistics, from the pair features (only real pairs are computed) and, through one
additive -inf mask, from every attention. Scores therefore do not depend on how far a jet is padded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from jettag.features.pairwise import pairwise_features


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm over the last (channel) dimension with statistics from real particles only."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # x (..., C), mask (...)
        if self.training:
            out = torch.zeros_like(x)
            out[mask] = super().forward(x[mask])
            return out
        return super().forward(x.reshape(-1, x.shape[-1])).view_as(x).masked_fill(~mask[..., None], 0)


class Embed(nn.Module):
    """Input batch norm, then (LayerNorm, Linear, GELU) per width in `dims`."""

    def __init__(self, input_dim: int, dims: tuple[int, ...]):
        super().__init__()
        self.input_bn = MaskedBatchNorm1d(input_dim)
        layers: list[nn.Module] = []
        for dim in dims:
            layers += [nn.LayerNorm(input_dim), nn.Linear(input_dim, dim), nn.GELU()]
            input_dim = dim
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.input_bn(x, mask)).masked_fill(~mask[..., None], 0)


class PairEmbed(nn.Module):
    """Pairwise features of real particle pairs -> one attention bias per head, (B, H, N, N).

    The features are symmetric, so they are computed and embedded for pairs i <= j only and
    written to both (i, j) and (j, i). The embedding is pointwise (a 1x1 convolution over pairs,
    here a Linear on the gathered pairs): BatchNorm, then (Linear, BatchNorm, GELU) per width.
    """

    def __init__(
        self,
        dims: tuple[int, ...],
        num_heads: int,
        input_dim: int = 4,
        final_activation: bool = True,
        eps: float = 1e-8,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.eps = eps
        layers: list[nn.Module] = [nn.BatchNorm1d(input_dim)]
        for dim in (*dims, num_heads):
            layers += [nn.Linear(input_dim, dim), nn.BatchNorm1d(dim), nn.GELU()]
            input_dim = dim
        if not final_activation:
            layers.pop()
        self.mlp = nn.Sequential(*layers)

    def forward(self, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, _ = v.shape
        pairs = (mask[:, :, None] & mask[:, None, :]).triu()
        b, i, j = pairs.nonzero(as_tuple=True)  # M real pairs with i <= j
        features = pairwise_features(v[b, i].float(), v[b, j].float(), self.eps)  # (M, 4)
        embedded = self.mlp(features)  # (M, H)
        bias = embedded.new_zeros(batch, self.num_heads, length, length)
        bias[b, :, i, j] = embedded
        bias[b, :, j, i] = embedded
        return bias


class Attention(nn.Module):
    """Multi-head attention through one fused `scaled_dot_product_attention` call."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.dropout = dropout
        self.in_proj = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, query: torch.Tensor, context: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        batch, n_q, dim = query.shape
        if query is context:
            q, k, v = self.in_proj(query).chunk(3, dim=-1)
        else:
            w, b = self.in_proj.weight, self.in_proj.bias
            q = F.linear(query, w[:dim], b[:dim])
            k, v = F.linear(context, w[dim:], b[dim:]).chunk(2, dim=-1)
        q, k, v = (t.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias.to(q.dtype), dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, Nq, head_dim)
        return self.out_proj(out.transpose(1, 2).reshape(batch, n_q, dim))


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
        self.dropout = nn.Dropout(dropout)
        self.pre_fc_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.act = nn.GELU()
        self.act_dropout = nn.Dropout(activation_dropout)
        self.post_fc_norm = nn.LayerNorm(ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.resid_scale = nn.Parameter(torch.ones(dim))

    def _finish(self, attended: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        x = attended * self.head_scale.repeat_interleave(self.head_dim)
        x = self.dropout(self.post_attn_norm(x)) + residual
        h = self.act_dropout(self.act(self.fc1(self.pre_fc_norm(x))))
        h = self.dropout(self.fc2(self.post_fc_norm(h)))
        return h + self.resid_scale * x

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        h = self.pre_attn_norm(x)
        return self._finish(self.attn(h, h, bias), x)


class ClassBlock(Block):
    """Class attention (CaiT): the class token attends to [class token, particles]."""

    def forward(self, cls: torch.Tensor, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        u = self.pre_attn_norm(torch.cat((cls, x), dim=1))  # (B, 1 + N, D)
        # As in the reference model, the query is the class token before normalization.
        return self._finish(self.attn(cls, u, bias), cls)


class ParticleTransformer(nn.Module):
    """ParT; `use_interaction=False` gives the plain transformer baseline ("ParT plain").

    The defaults are the reference configuration (2.14M parameters for 17 inputs, 10 classes).
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        embed_dims: tuple[int, ...] = (128, 512, 128),
        pair_embed_dims: tuple[int, ...] = (64, 64, 64),
        num_heads: int = 8,
        num_layers: int = 8,
        num_cls_layers: int = 2,
        ffn_ratio: int = 4,
        dropout: float = 0.1,
        attn_dropout: float = 0.1,
        activation_dropout: float = 0.1,
        use_interaction: bool = True,
        pair_final_activation: bool = True,
    ):
        super().__init__()
        embed_dims, pair_embed_dims = tuple(embed_dims), tuple(pair_embed_dims)
        dim = embed_dims[-1]
        if dim % num_heads:
            raise ValueError(f"the embedding width {dim} is not divisible by num_heads={num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.embed = Embed(input_dim, embed_dims)
        self.pair_embed = (
            PairEmbed(pair_embed_dims, num_heads, final_activation=pair_final_activation) if use_interaction else None
        )
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, ffn_ratio, dropout, attn_dropout, activation_dropout) for _ in range(num_layers)
        )
        self.cls_blocks = nn.ModuleList(ClassBlock(dim, num_heads, ffn_ratio, 0.0, 0.0, 0.0) for _ in range(num_cls_layers))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward_features(self, x: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The backbone: (B, N, C), (B, N, 4), (B, N) -> (B, D) normalized class token."""
        mask = mask.bool()
        h = self.embed(x, mask)  # (B, N, D)
        padding = torch.zeros(mask.shape, dtype=h.dtype, device=h.device).masked_fill(~mask, float("-inf"))
        bias = padding[:, None, None, :]  # (B, 1, 1, N)
        if self.pair_embed is not None:
            bias = self.pair_embed(v, mask) + bias  # (B, H, N, N)
        for block in self.blocks:
            h = block(h, bias)
        cls = self.cls_token.expand(h.shape[0], -1, -1)
        cls_bias = F.pad(padding, (1, 0))[:, None, None, :]  # (B, 1, 1, 1 + N)
        for block in self.cls_blocks:
            cls = block(cls, h, cls_bias)
        return self.norm(cls.squeeze(1))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Class logits (B, num_classes); no softmax."""
        return self.forward_head(self.forward_features(x, v, mask))

    def reset_head(self, num_classes: int) -> None:
        self.head = nn.Linear(self.dim, num_classes)
