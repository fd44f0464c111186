"""ParT's pair embedding: the interaction features of real particle pairs -> one attention bias per head.

For particles a, b the four features ln kT, ln z, ln Delta, ln m^2 (`jettag.features.pairwise`) go
through a pointwise MLP (the reference's 1x1 convolutions, here Linear layers): BatchNorm, then
(Linear, BatchNorm, GELU) per width, the last GELU optional. The features are symmetric, so they are
computed and embedded for pairs i >= j only and written to both (i, j) and (j, i).

At inference the MLP runs with its batch norms folded into the linear layers, in cache-sized
chunks. In training on "cpu_kernels" it runs as `PairMLPTraining`: the operations autograd would
run, forward and backward, into buffers reused from step to step (`kernels.workspace_for`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from jettag.features.pairwise import pair_features_from_kinematics, particle_kinematics
from jettag.models.part.kernels import (
    Owner,
    Workspace,
    batch_norm_train,
    gelu_backward_out,
    gelu_out,
    linear,
    workspace_for,
)
from jettag.models.part.packing import Bucket, padding_mask
from jettag.models.part.path import ExecutionPath


def bn_affine(bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode batch norm as y = x * scale + shift."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def at_least_float32(v: torch.Tensor) -> torch.Tensor:
    """Four-vectors for the pair features: never in half precision (m^2 is a difference of large numbers)."""
    return v if v.dtype == torch.float64 else v.float()


def bn_apply(bn: nn.BatchNorm1d, z: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor,
             out: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """Train-mode batch norm of z (M, C) with its batch statistics, into `out` (a recomputation)."""
    scale = invstd * bn.weight
    return torch.addcmul(bn.bias - mean * scale, z, scale, out=out)


class PairMLPTraining(torch.autograd.Function):
    """The pair embedding in training, forward and backward, with its intermediates in a `Workspace`.

    The same operations as autograd runs through `PairEmbed.mlp` (the same ATen kernels for batch
    norm and GELU, matrix products for the Linear layers and their gradients), into reused memory.
    Only each Linear layer's output z (before its batch norm) is kept for the backward pass; the
    batch norm's output and the GELU after it are recomputed there from z and the batch statistics,
    in two buffers that take turns (`a`, `b`): ~0.45x the memory of keeping every intermediate
    (the pair MLP held 350 MB of the default training run's 1.2 GB heap peak), for one more GELU
    per hidden layer.
    """

    @staticmethod
    def forward(ctx, features: torch.Tensor, module: PairEmbed, *params: torch.Tensor) -> torch.Tensor:
        layers = module.layers()
        owner = Owner()
        space = workspace_for(module, owner)
        rows = features.shape[0]
        widest = max(max(layer.in_features, layer.out_features) for layer, _, _ in layers)
        a, b = (space.get(name, rows, widest, features) for name in ("a", "b"))  # sized once, then views
        h = space.get("in", rows, features.shape[1], features)
        stats = [batch_norm_train(module.mlp[0], features, h)]
        zs = []
        for k, (layer, bn, gelu) in enumerate(layers):
            last = k == len(layers) - 1  # its output leaves the workspace: a tensor of its own
            width = layer.out_features
            z = space.get(f"z{k}", rows, width, features)
            torch.addmm(layer.bias, h, layer.weight.t(), out=z)
            zs.append(z)
            y = features.new_empty(rows, width) if last and not gelu else a[:, :width]
            stats.append(batch_norm_train(bn, z, y))
            if gelu:
                h = gelu_out(y, features.new_empty(rows, width) if last else b[:, :width])
            else:
                h = y
        ctx.owner, ctx.space, ctx.module = owner, space, module
        ctx.stats, ctx.zs = stats, zs
        ctx.features = features
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        if ctx.zs is None:  # its buffers went back to the workspace after the first backward
            raise RuntimeError(
                "jettag's train-mode pair embedding supports one backward pass per forward pass "
                "(retain_graph=True is not supported on the CPU path); run the forward pass again."
            )
        space: Workspace = ctx.space
        features = ctx.features
        rows = features.shape[0]
        layers = ctx.module.layers()
        widest = max(max(layer.in_features, layer.out_features) for layer, _, _ in layers)
        free, spare = (space.get(name, rows, widest, features) for name in ("a", "b"))
        grads: list[tuple] = [()] * len(layers)  # per layer: Linear weight, bias, batch-norm weight, bias
        g = grad.contiguous()  # the gradient at the current layer's output (in `spare` below the top)
        for k in reversed(range(len(layers))):
            (layer, bn, gelu), z, (mean, invstd) = layers[k], ctx.zs[k], ctx.stats[k + 1]
            width = layer.out_features
            if gelu:  # the batch norm's output again, then the gradient at it, in place
                y = bn_apply(bn, z, mean, invstd, free[:, :width])
                gy = gelu_backward_out(g, y, y)
            else:
                gy = g
            gz, g_bn_w, g_bn_b = torch.ops.aten.native_batch_norm_backward.out(
                gy, z, bn.weight, bn.running_mean, bn.running_var, mean, invstd, True, bn.eps,
                [True, True, True], out0=spare[:, :width], out1=torch.empty_like(mean),
                out2=torch.empty_like(mean),
            )  # fmt: skip
            if k == 0:
                h = space.get("in", rows, features.shape[1], features)
            else:  # the layer's input: the GELU of the batch norm of the layer below, again
                below_layer, below_bn, below_gelu = layers[k - 1]
                below_mean, below_invstd = ctx.stats[k]
                h = bn_apply(below_bn, ctx.zs[k - 1], below_mean, below_invstd,
                             free[:, : below_layer.out_features])  # fmt: skip
                if below_gelu:
                    h = gelu_out(h, h)
            # x^T dz: with few inputs and many pairs much faster than dz^T x
            g_w = torch.mm(h.t(), gz).t().contiguous()
            g = torch.mm(gz, layer.weight, out=free[:, : layer.in_features])
            grads[k] = (g_w, gz.sum(0), g_bn_w, g_bn_b)
            free, spare = spare, free  # the gradient now lives in the old `free`
        bn0 = ctx.module.mlp[0]
        mean, invstd = ctx.stats[0]
        g_in, g_bn_w, g_bn_b = torch.ops.aten.native_batch_norm_backward(
            g, features, bn0.weight, bn0.running_mean, bn0.running_var, mean, invstd, True, bn0.eps,
            [ctx.needs_input_grad[0], True, True],
        )  # fmt: skip
        ctx.space.owner = None  # the workspace is free again
        ctx.zs = ctx.stats = ctx.features = None
        return (
            g_in if ctx.needs_input_grad[0] else None,
            None,
            g_bn_w,
            g_bn_b,
            *(t for g4 in grads for t in g4),
        )


def real_pairs(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(jet, i, j) of the real pairs i >= j, ordered by jet, then i, then j; the feature arithmetic
    takes the higher index first, as the reference."""
    return (mask[:, :, None] & mask[:, None, :]).tril().nonzero(as_tuple=True)


class PairEmbed(nn.Module):
    """Pairwise features of real particle pairs -> additive attention masks, (b, H, n, n) per bucket.

    A mask holds the bias on real pairs, 0 from padded queries to real keys and -inf for every
    padded key (see the module docstring for the embedding).
    """

    def __init__(
        self,
        dims: Sequence[int],
        num_heads: int,
        input_dim: int = 4,
        final_activation: bool = True,
        eps: float = 1e-8,
        chunk_size: int = 16384,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.eps = eps
        self.chunk_size = chunk_size  # pairs per inference chunk: intermediates stay in cache
        layers: list[nn.Module] = [nn.BatchNorm1d(input_dim)]
        for dim in (*dims, num_heads):
            layers += [nn.Linear(input_dim, dim), nn.BatchNorm1d(dim), nn.GELU()]
            input_dim = dim
        if not final_activation:
            layers.pop()
        self.mlp = nn.Sequential(*layers)

    def layers(self) -> list[tuple[nn.Linear, nn.BatchNorm1d, bool]]:
        """(Linear, BatchNorm1d, GELU after it) per layer of the MLP, after its input batch norm `mlp[0]`."""
        modules = list(self.mlp)
        return [(modules[k], modules[k + 1], k + 2 < len(modules)) for k in range(1, len(modules), 3)]

    def folded_layers(self) -> list[tuple[torch.Tensor, torch.Tensor, bool]]:
        """(weight, bias, gelu) per Linear with the eval-mode batch norms folded in: the same map, fewer passes."""
        in_scale, in_shift = bn_affine(self.mlp[0])
        folded = []
        for k, (layer, bn, gelu) in enumerate(self.layers()):
            weight, bias = layer.weight, layer.bias
            if k == 0:
                weight, bias = weight * in_scale, bias + weight @ in_shift
            scale, shift = bn_affine(bn)
            folded.append((weight * scale[:, None], bias * scale + shift, gelu))
        return folded

    def embed(self, features: torch.Tensor, path: ExecutionPath, chunked: bool = True) -> torch.Tensor:
        """Pair features (M, 4) -> biases (M, H)."""
        if self.training:
            return self.embed_training(features, path)
        layers = self.folded_layers()

        def run(h: torch.Tensor) -> torch.Tensor:
            for weight, bias, gelu in layers:
                h = linear(h, weight, bias, path, gelu)
            return h

        if not chunked or features.shape[0] <= self.chunk_size:
            return run(features)
        return torch.cat([run(part) for part in features.split(self.chunk_size)])

    def embed_training(self, features: torch.Tensor, path: ExecutionPath) -> torch.Tensor:
        cpu = path is ExecutionPath.CPU_KERNELS
        if cpu and not torch.is_autocast_enabled("cpu") and self._plain_layers():
            bn0 = self.mlp[0]
            params = [bn0.weight, bn0.bias]
            params += [
                t for layer, bn, _ in self.layers() for t in (layer.weight, layer.bias, bn.weight, bn.bias)
            ]
            return PairMLPTraining.apply(features, self, *params)
        modules = list(self.mlp)
        h = modules[0](features)
        first = modules[1]
        # With a contiguous W^T, autograd forms the weight gradient as x^T dy: with 4 inputs and ~10^5
        # pairs that is ~3x faster on a CPU than F.linear's dy^T x.
        h = torch.addmm(first.bias, h, first.weight.t().contiguous())
        for module in modules[2:]:
            h = module(h)
        return h

    def _plain_layers(self) -> bool:
        """Whether every batch norm has affine weights and running statistics and is in train mode (the
        fused path's assumptions; a batch norm in eval mode keeps its statistics, see task.freeze_batchnorm)."""
        norms = [m for m in self.mlp if isinstance(m, nn.BatchNorm1d)]
        return all(m.affine and m.track_running_stats and m.training for m in norms)

    def forward(
        self, v: torch.Tensor, mask: torch.Tensor, buckets: Sequence[Bucket], path: ExecutionPath
    ) -> list[torch.Tensor]:
        """One mask (b, H, n, n) per bucket of jets: `v` (B, N, 4), `mask` (B, N), real particles first.

        Training embeds the pairs of the whole batch at once (its batch norms take their statistics
        over all of them). Inference embeds a few jets at a time (`chunk_size` pairs or so): the
        pairs' indices and features then never exist for a whole evaluation batch (~10^6 pairs,
        ~0.2 GB at 1,024 jets of 64 particles)."""
        kinematics = particle_kinematics(at_least_float32(v))  # (B, N, 7), each particle once
        if self.training:
            b, i, j = real_pairs(mask)
            embedded = self.embed(
                pair_features_from_kinematics(kinematics[b, i], kinematics[b, j], self.eps), path
            )  # (M, H)
        dtype = embedded.dtype if self.training else kinematics.dtype
        masks, first_pair = [], 0
        for bucket in buckets:
            length = bucket.length
            out = padding_mask(mask[bucket.start : bucket.stop, :length], dtype)[:, None, None, :]
            out = out.expand(-1, self.num_heads, length, -1).contiguous()  # (b, H, n, n)
            if self.training:
                last_pair = first_pair + bucket.num_pairs
                pairs = slice(first_pair, last_pair)
                self._scatter(out, b[pairs] - bucket.start, i[pairs], j[pairs], embedded[pairs])
                first_pair = last_pair
            else:
                step = max(1, self.chunk_size // max(1, length * (length + 1) // 2))  # jets at a time
                for first in range(bucket.start, bucket.stop, step):
                    last = min(first + step, bucket.stop)
                    bb, ii, jj = real_pairs(mask[first:last, :length])
                    kin = kinematics[first:last]
                    values = self.embed(
                        pair_features_from_kinematics(kin[bb, ii], kin[bb, jj], self.eps), path
                    )
                    self._scatter(out, bb + (first - bucket.start), ii, jj, values.to(out.dtype))
            masks.append(out)
        return masks

    @staticmethod
    def _scatter(
        out: torch.Tensor, b: torch.Tensor, i: torch.Tensor, j: torch.Tensor, values: torch.Tensor
    ) -> None:
        """The biases of pairs (b, i, j) into the mask at (i, j) and (j, i)."""
        out[b, :, i, j] = values
        out[b, :, j, i] = values

    def forward_dense(self, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Inference on the full (N, N) grid with static shapes (the "dense" path): (B, H, N, N)."""
        kinematics = particle_kinematics(at_least_float32(v))
        length = kinematics.shape[1]
        ka = kinematics[:, :, None, :].expand(-1, -1, length, -1)
        kb = kinematics[:, None, :, :].expand(-1, length, -1, -1)
        lower = torch.ones(length, length, dtype=torch.bool, device=v.device).tril()[..., None]
        features = pair_features_from_kinematics(
            torch.where(lower, ka, kb), torch.where(lower, kb, ka), self.eps
        )
        embedded = self.embed(features, ExecutionPath.DENSE, chunked=False)  # (B, N, N, H)
        embedded = embedded.permute(0, 3, 1, 2)  # (B, H, N, N)
        # where, not a product: padded particles may give NaN features (ONNX's atan2(0, 0))
        bias = torch.where(mask[:, None, :, None], embedded, 0)
        return torch.where(mask[:, None, None, :], bias, float("-inf"))
