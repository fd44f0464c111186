"""The Particle Transformer model: particle embedding, blocks, class token, head.

A forward pass sorts and buckets the jets (`packing.Layout`), embeds the real particles (`Embed`)
and their pairs (`PairEmbed`, one attention mask per bucket), runs the particle-attention blocks
and then the class-attention blocks, and reads the normalized class token. `forward_features`
and `forward_tokens` share everything up to the particle blocks (`_embedded`). The "dense" path
(`path.ExecutionPath`) instead runs the padded batch as given, with static shapes (`_forward_dense`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from jettag.models.base import JetTagger
from jettag.models.part.blocks import Block, ClassBlock
from jettag.models.part.kernels import mlp
from jettag.models.part.packing import Layout, padding_mask
from jettag.models.part.pair_embed import PairEmbed
from jettag.models.part.path import ExecutionPath, execution_path, resolve


class Embed(nn.Module):
    """Input batch norm, then (LayerNorm, Linear, GELU) per width in `dims`; padded particles give 0."""

    def __init__(self, input_dim: int, dims: Sequence[int]):
        super().__init__()
        self.input_bn = nn.BatchNorm1d(input_dim)
        layers: list[nn.Module] = []
        for dim in dims:
            layers += [nn.LayerNorm(input_dim), nn.Linear(input_dim, dim), nn.GELU()]
            input_dim = dim
        self.mlp = nn.Sequential(*layers)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, path: ExecutionPath, packed: bool = True
    ) -> torch.Tensor:
        """Packed: the real particles' embeddings (T, D), jet after jet (batch norm sees no padding).
        Otherwise (inference with static shapes): (B, N, D), zeros for padding."""
        if packed:
            return mlp(self.mlp, self.input_bn(x[mask]), path)
        h = mlp(self.mlp, self.input_bn(x.flatten(0, 1)).view_as(x), path)
        return h.masked_fill(~mask[..., None], 0)


class ParticleTransformer(JetTagger):
    """ParT; `use_interaction=False` gives the plain transformer baseline ("ParT plain").

    The defaults are the reference configuration (2.14M parameters for 17 inputs, 10 classes),
    that of the published models: `pair_final_activation=True` is weaver's
    `use_pre_activation_pair=False`, and no `fc_params` (the head is one Linear). `fc_params`
    adds hidden layers between the normalized class token and the head, as weaver's
    `fc_params` (see `jettag.models.base`). Weights are initialised as weaver initialises ParT
    (xavier-uniform Linear layers, with q, k, v treated separately, and the output layers of
    block l scaled by 1/sqrt(2 l)). `path`: how the work is done (`jettag.models.part.path`);
    it does not change the scores.
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        embed_dims: Sequence[int] = (128, 512, 128),
        pair_embed_dims: Sequence[int] = (64, 64, 64),
        num_heads: int = 8,
        num_layers: int = 8,
        num_cls_layers: int = 2,
        ffn_ratio: int = 4,
        dropout: float = 0.1,
        attn_dropout: float = 0.1,
        activation_dropout: float = 0.1,
        use_interaction: bool = True,
        pair_final_activation: bool = True,
        fc_params: Sequence[Sequence] = (),
        path: str = "auto",
    ):
        super().__init__()
        embed_dims, pair_embed_dims = tuple(embed_dims), tuple(pair_embed_dims)
        dim = embed_dims[-1]
        if dim % num_heads:
            raise ValueError(f"the embedding width {dim} is not divisible by num_heads={num_heads}")
        self.embed_dim = dim  # of the particle tokens and the class token
        self.num_heads = num_heads
        self.embed = Embed(input_dim, embed_dims)
        self.pair_embed = (
            PairEmbed(pair_embed_dims, num_heads, final_activation=pair_final_activation)
            if use_interaction
            else None
        )
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, ffn_ratio, dropout, attn_dropout, activation_dropout)
            for _ in range(num_layers)
        )
        self.cls_blocks = nn.ModuleList(
            ClassBlock(dim, num_heads, ffn_ratio, 0.0, 0.0, 0.0) for _ in range(num_cls_layers)
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm = nn.LayerNorm(dim)
        self.build_head(dim, num_classes, fc_params)
        self.path = path
        self._init_weights()

    @property
    def path(self) -> ExecutionPath:
        """The execution path: "auto", "cpu_kernels", "generic" or "dense" (`jettag.models.part.path`)."""
        return self._path

    @path.setter
    def path(self, value: str) -> None:
        self._path = execution_path(value)

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for name, module in self.named_modules():
            # the pair embedding keeps PyTorch's default, as the reference's Conv1d layers do
            if isinstance(module, nn.Linear) and not name.startswith("pair_embed."):
                _init_linear(module, qkv=name.endswith("in_proj"))
        with torch.no_grad():
            for layer, block in enumerate(self.blocks, start=1):
                block.attn.out_proj.weight.div_(math.sqrt(2.0 * layer))
                block.fc2.weight.div_(math.sqrt(2.0 * layer))

    def _embedded(self, layout: Layout, path: ExecutionPath) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The real particles' embeddings (T, D) in the layout's order, and the attention mask of each bucket."""
        h = self.embed(layout.x, layout.mask, path)  # batch norm over the real particles of the whole batch
        if self.pair_embed is not None:
            masks = self.pair_embed(layout.v, layout.mask, layout.buckets, path)  # (b, H, n, n) per bucket
        else:
            masks = layout.bucket_masks(h.dtype)  # (b, 1, 1, n)
        return h, [self._autocast(m) for m in masks]

    def forward_features(self, x: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The backbone: (B, N, C), (B, N, 4), (B, N) -> (B, dim), the normalized class token through `fc`."""
        mask = mask.bool()
        path = resolve(self.path, x.device)
        if path is ExecutionPath.DENSE and not self.training:
            return self.fc(self._forward_dense(x, v, mask, path))
        # Training works on packed tokens: the backward pass, the heavier part, then skips all padding.
        # Inference runs each bucket padded through the blocks unless that pads much (random batches).
        layout = Layout(x, v, mask, packed=True if self.training else None)
        h, masks = self._embedded(layout, path)
        cls = self._through_blocks(layout, h, masks, path)  # (B, D), jets in the layout's order
        return self.fc(self.norm(layout.jets_back(cls)))

    def forward_tokens(
        self, x: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Per-particle embeddings after the particle-attention blocks: (B, N, C), (B, N, 4), (B, N) -> (B, N, D),
        zeros at padded positions. What particle-level pretraining objectives read. With `features`, also
        `forward_features`' output (B, dim) from the same pass: (tokens, features)."""
        mask = mask.bool()
        path = resolve(self.path, x.device)
        layout = Layout(x, v, mask, packed=True)
        h, masks = self._embedded(layout, path)
        if features:
            h, cls = self._through_blocks(layout, h, masks, path, keep_tokens=True)
        else:
            for block in self.blocks:
                h = block(h, masks, path, layout.packing)
        tokens = layout.tokens_back(h, mask)
        return (tokens, self.fc(self.norm(layout.jets_back(cls)))) if features else tokens

    def _through_blocks(
        self,
        layout: Layout,
        h: torch.Tensor,
        masks: list[torch.Tensor],
        path: ExecutionPath,
        keep_tokens: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The particle blocks, then the class blocks: embeddings (T, D) -> class token (B, D); with
        `keep_tokens` (packed layouts only), (the tokens (T, D) after the particle blocks, class token)."""
        # (b, 1, 1, 1 + n): the class token is always a key
        cls_masks = layout.bucket_masks(h.dtype, class_token=True)
        cls = self.cls_token.expand(len(layout.counts), -1, -1)
        if layout.packed:  # the token-wise layers work on the real particles, attention pads them per bucket
            for block in self.blocks:
                h = block(h, masks, path, layout.packing)
            for block in self.cls_blocks:
                cls = block(cls, h, cls_masks, path, layout.packing)
            return (h, cls.squeeze(1)) if keep_tokens else cls.squeeze(1)
        parts = []  # each bucket goes through the blocks padded, without repacking in every block
        for k, bucket in enumerate(layout.buckets):
            h_k, cls_k = layout.packing.pad(h, k), cls[bucket.start : bucket.stop]
            for block in self.blocks:
                h_k = block(h_k, masks[k : k + 1], path)
            for block in self.cls_blocks:
                cls_k = block(cls_k, h_k, cls_masks[k : k + 1], path)
            parts.append(cls_k)
        return torch.cat(parts).squeeze(1)

    def _forward_dense(
        self, x: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, path: ExecutionPath
    ) -> torch.Tensor:
        """Inference on the padded batch as given, no data-dependent shapes: (B, D) normalized class token."""
        h = self.embed(x, mask, path, packed=False)  # (B, N, D)
        if self.pair_embed is not None:
            attn_mask = self.pair_embed.forward_dense(v, mask)  # (B, H, N, N)
        else:
            attn_mask = padding_mask(mask, h.dtype)[:, None, None, :]  # (B, 1, 1, N)
        attn_mask = self._autocast(attn_mask)
        for block in self.blocks:
            h = block(h, [attn_mask], path)
        cls = self.cls_token.expand(h.shape[0], -1, -1)
        cls_mask = padding_mask(nn.functional.pad(mask, (1, 0), value=True), h.dtype)[:, None, None, :]
        for block in self.cls_blocks:
            cls = block(cls, h, [cls_mask], path)  # (B, 1, D); keys (B, 1 + N)
        return self.norm(cls.squeeze(1))

    @staticmethod
    def _autocast(attn_mask: torch.Tensor) -> torch.Tensor:
        """The mask in the autocast dtype, converted once rather than in every block."""
        device = attn_mask.device.type
        return (
            attn_mask.to(torch.get_autocast_dtype(device)) if torch.is_autocast_enabled(device) else attn_mask
        )

    def layer_groups(self) -> list[tuple[str, ...]]:
        """Embeddings (particle and pair), each particle block, class token with the first class
        block, each further class block, the final norm, each hidden FC layer on top."""
        cls_blocks = [f"cls_blocks.{i}" for i in range(len(self.cls_blocks))]
        return [
            ("embed", "pair_embed"),
            *((f"blocks.{i}",) for i in range(len(self.blocks))),
            ("cls_token", *cls_blocks[:1]),
            *((name,) for name in cls_blocks[1:]),
            ("norm",),
            *self._items("fc"),
        ]

    def reset_head(self, num_classes: int) -> None:
        """A new final Linear for `num_classes`, initialised as weaver initialises ParT's."""
        super().reset_head(num_classes)
        _init_linear(self.head)


def _init_linear(linear: nn.Linear, qkv: bool = False) -> None:
    if qkv:  # bound from the fan of each of q, k, v
        bound = math.sqrt(6.0 / (linear.weight.shape[0] // 3 + linear.weight.shape[1]))
        nn.init.uniform_(linear.weight, -bound, bound)
    else:
        nn.init.xavier_uniform_(linear.weight)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)
