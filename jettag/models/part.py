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

The model is weaver-core's ParticleTransformer (the reference implementation) tensor for tensor:
`jettag.models.weaver.load_weaver_weights` loads its state dicts, and with the same weights the
logits agree to float32 rounding (and, in float64, train-mode gradients to 1e-10). Only the way
the work is done differs; the arithmetic of every layer is the same:

- jets are sorted by multiplicity and cut into buckets (`plan_buckets`); each bucket is padded
  only to its own longest jet for attention, and in training (at inference too when the buckets
  would pad much, `PACK_ABOVE`) the token-wise layers work on the packed real particles (`Packing`);
- pair features and their embedding only for the N(N+1)/2 real pairs of each jet; at inference
  the pair MLP runs with its batch norms folded into the linear layers, in cache-sized chunks;
- the interaction bias and the padding are one additive mask per bucket;
- on a CPU: attention as matmul + softmax on a few jets at a time (the fused CPU kernel is slow
  at head width 16 and has no dropout), oneDNN linear layers with the GELU fused at inference,
  and dropout masks from uniform draws (`dropout`). Elsewhere (GPU, AMP) plain PyTorch:
  `scaled_dot_product_attention`, `F.dropout`.

Shapes: the default forward is data dependent (bucket sizes, `nonzero` for the real pairs). At
inference under `torch.onnx.export`, `torch.export` or `torch.compile`, or with `model.dense =
True`, it instead runs on the padded batch as given with static shapes: the pair embedding on the
full (N, N) grid, SDPA attention (same scores; more work).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jettag.features.pairwise import pair_features_from_kinematics, particle_kinematics
from jettag.models.base import JetTagger


def _exporting() -> bool:
    return torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting() or torch.compiler.is_compiling()


CPU_KERNELS = True  # False: the generic (GPU) code path on CPUs too, for tests


def _cpu_kernels(x: torch.Tensor) -> bool:
    """Whether to use the CPU-specific ways of computing (same results) for `x`."""
    return CPU_KERNELS and x.device.type == "cpu" and not _exporting()


_RNG_POOL: ThreadPoolExecutor | None = None
_RNG_WORKERS = 0
RNG_SPLIT = 1 << 17  # numbers per CPU thread before a draw is split over threads


def _fill_uniform(seed: np.random.SeedSequence, out: np.ndarray) -> None:
    np.random.Generator(np.random.PCG64(seed)).random(dtype=np.float32, out=out)


def _uniform(shape: torch.Size) -> torch.Tensor:
    """Uniform float32 numbers in [0, 1) on the CPU, 24-bit resolution as `torch.rand`.

    Large draws come from NumPy's PCG64, seeded from torch's generator at every call (so
    `torch.manual_seed` still fixes them): about 3x faster than torch's serial Mersenne twister,
    and split over torch's CPU threads (independent spawned streams; NumPy releases the GIL).
    """
    global _RNG_POOL, _RNG_WORKERS
    size = math.prod(shape)
    if size < 1 << 16:
        return torch.rand(shape)
    seed = np.random.SeedSequence(int(torch.randint(0, 2**62, ())))
    out = torch.empty(size, dtype=torch.float32)
    array = out.numpy()
    parts = max(1, min(torch.get_num_threads(), size // RNG_SPLIT))
    if parts == 1:
        _fill_uniform(seed, array)
    else:
        if _RNG_POOL is None or _RNG_WORKERS < parts:
            _RNG_POOL, _RNG_WORKERS = ThreadPoolExecutor(parts, thread_name_prefix="jettag-rng"), parts
        bounds = np.linspace(0, size, parts + 1).astype(np.int64)
        jobs = [_RNG_POOL.submit(_fill_uniform, child, array[a:b])
                for child, a, b in zip(seed.spawn(parts), bounds[:-1], bounds[1:], strict=True)]  # fmt: skip
        for job in jobs:
            job.result()
    return out.view(shape)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """`F.dropout`; on CPUs the Bernoulli(1 - p) mask is drawn as uniform < 1 - p, several times faster."""
    if not training or p == 0:
        return x
    if not _cpu_kernels(x) or p >= 1:
        return F.dropout(x, p, training=True)
    keep = 1.0 - p
    return x * _uniform(x.shape).lt_(keep).div_(keep).to(x.dtype)


class Dropout(nn.Dropout):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


_ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool = False
) -> torch.Tensor:
    """`F.linear`, then GELU if asked.

    Without autograd on a CPU in float32, one oneDNN call (the kernel torch.compile uses) with the
    GELU fused in: 10-25% faster than `F.linear`, which first copies the bias into the output.
    """
    if (
        _ONEDNN_LINEAR
        and not torch.is_grad_enabled()
        and _cpu_kernels(x)
        and x.dtype == weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
    ):
        return torch.ops.mkldnn._linear_pointwise(
            x, weight, bias, "gelu" if gelu else "none", [], "none" if gelu else ""
        )
    out = F.linear(x, weight, bias)
    return F.gelu(out) if gelu else out


def _mlp(layers: nn.Sequential, h: torch.Tensor) -> torch.Tensor:
    """`layers(h)`, each (Linear, GELU) pair through `_linear`."""
    modules = list(layers)
    k = 0
    while k < len(modules):
        module = modules[k]
        if isinstance(module, nn.Linear):
            gelu = k + 1 < len(modules) and isinstance(modules[k + 1], nn.GELU)
            h = _linear(h, module.weight, module.bias, gelu)
            k += 2 if gelu else 1
        else:
            h = module(h)
            k += 1
    return h


def _bn_affine(bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode batch norm as y = x * scale + shift."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def _at_least_float32(v: torch.Tensor) -> torch.Tensor:
    """Four-vectors for the pair features: never in half precision (m^2 is a difference of large numbers)."""
    return v if v.dtype == torch.float64 else v.float()


def _padding(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 for real particles, -inf for padding: the additive key mask."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))


@dataclass(frozen=True)
class Bucket:
    """Jets start:stop of a batch sorted by multiplicity, run through the blocks padded to `length`."""

    start: int
    stop: int
    length: int
    num_pairs: int  # real pairs i >= j of these jets


# Relative costs for choosing buckets, in units of one attention-score entry: the linear layers of
# one particle ~256, a further bucket ~8k in training (packed tokens) and ~64k at inference (each
# bucket through the blocks on its own). Measured on a 2-core CPU; only the choice depends on them.
TOKEN_COST = 256
BUCKET_COST = {True: 8 * 1024, False: 64 * 1024}


# Inference packs the tokens when the padded buckets would hold this many times the real particles
# (batches grouped by multiplicity hold ~1.05, random batches ~1.2; packing costs ~5% in copies).
PACK_ABOVE = 1.08


def plan_buckets(counts: Sequence[int], packed: bool, min_jets: int = 4) -> list[Bucket]:
    """Buckets of jets sorted by decreasing multiplicity: 1, 2, 4, 8 or 16 equal ones, the cheapest.

    Attention costs ~ n^2 per jet of a bucket padded to length n. The token-wise layers cost ~ n
    per jet when each bucket runs through the blocks padded, and do not depend on the buckets when
    they work on packed tokens (`packed`, used in training; attention then pads each bucket).
    """
    total = len(counts)
    best: tuple[float, list[tuple[int, int]]] | None = None
    for groups in (1, 2, 4, 8, 16):
        size = -(-total // groups)
        if groups > 1 and size < min_jets:
            break
        bounds = [(start, min(start + size, total)) for start in range(0, total, size)]
        cost = BUCKET_COST[packed] * len(bounds)
        for start, stop in bounds:
            cost += (stop - start) * (counts[start] ** 2 + (0 if packed else TOKEN_COST * counts[start]))
        if best is None or cost < best[0]:
            best = (cost, bounds)
    pairs = [n * (n + 1) // 2 for n in counts]
    return [Bucket(start, stop, max(counts[start], 1), sum(pairs[start:stop])) for start, stop in best[1]]


class Packing:
    """Real particles stored jet after jet as tokens (T, C); each bucket laid out padded (b, n, C) for attention.

    Jets are sorted by decreasing multiplicity with real particles first, so the tokens of a bucket
    are one contiguous range; `slots` are their positions in the bucket's padded layout.
    """

    def __init__(self, counts: Sequence[int], buckets: Sequence[Bucket], device: torch.device):
        self.buckets = list(buckets)
        self.ranges: list[tuple[int, int]] = []
        self.slots: list[torch.Tensor | None] = []
        first = 0
        for bucket in self.buckets:
            jet_counts = counts[bucket.start : bucket.stop]
            tokens = sum(jet_counts)
            self.ranges.append((first, first + tokens))
            first += tokens
            if tokens == len(jet_counts) * bucket.length:  # no padding in this bucket
                self.slots.append(None)
                continue
            n = torch.tensor(jet_counts, device=device)
            rows = torch.repeat_interleave(torch.arange(len(jet_counts), device=device), n)
            columns = torch.arange(tokens, device=device) - torch.repeat_interleave(torch.cumsum(n, 0) - n, n)
            self.slots.append(rows * bucket.length + columns)

    def pad(self, tokens: torch.Tensor, k: int) -> torch.Tensor:
        """Bucket k's tokens (T, C) -> (b, n, C), zeros at padded positions."""
        bucket, (first, last) = self.buckets[k], self.ranges[k]
        shape = (bucket.stop - bucket.start, bucket.length, tokens.shape[-1])
        if self.slots[k] is None:
            return tokens[first:last].view(shape)
        padded = tokens.new_zeros(shape[0] * shape[1], shape[2])
        return padded.index_copy(0, self.slots[k], tokens[first:last]).view(shape)

    def unpad(self, padded: torch.Tensor, k: int) -> torch.Tensor:
        """(b, n, C) -> the real positions' rows (T_k, C)."""
        flat = padded.reshape(-1, padded.shape[-1])
        return flat if self.slots[k] is None else flat.index_select(0, self.slots[k])


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

    def forward(self, x: torch.Tensor, mask: torch.Tensor, packed: bool = True) -> torch.Tensor:
        """Packed: the real particles' embeddings (T, D), jet after jet (batch norm sees no padding).
        Otherwise (inference with static shapes): (B, N, D), zeros for padding."""
        if packed:
            return _mlp(self.mlp, self.input_bn(x[mask]))
        return _mlp(self.mlp, self.input_bn(x.flatten(0, 1)).view_as(x)).masked_fill(~mask[..., None], 0)


class _Workspace:
    """Buffers of one train-mode pair-embedding pass, kept from one training step to the next.

    The pair MLP works on ~10^5 pairs x 64 channels: a fresh tensor of that size is a fresh mmap
    for the C allocator, and the page faults of touching it cost more than the arithmetic done in
    it (a GELU into reused memory is ~5x faster than into a new tensor on a 2-core CPU).
    """

    def __init__(self):
        self.buffers: dict[str, torch.Tensor] = {}
        self.owner: weakref.ref | None = None  # the live autograd node using it

    def free(self) -> bool:
        return self.owner is None or self.owner() is None

    def get(self, name: str, rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
        size = rows * cols
        buffer = self.buffers.get(name)
        if buffer is None or buffer.numel() < size or buffer.dtype != like.dtype:
            buffer = torch.empty(size + size // 4, dtype=like.dtype, device=like.device)  # headroom
            self.buffers[name] = buffer
        return buffer[:size].view(rows, cols)


class _Owner:
    """Held by an autograd node for as long as it lives; the node's workspace is busy meanwhile."""


# per PairEmbed module, kept outside it (a module's state must stay copyable and picklable)
_WORKSPACES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _workspace(module: nn.Module, owner: _Owner) -> _Workspace:
    """A workspace of `module` that no live autograd node uses (several forward passes may await backward)."""
    pool = _WORKSPACES.setdefault(module, [])
    for space in pool:
        if space.free():
            break
    else:
        space = _Workspace()
        pool.append(space)
    space.owner = weakref.ref(owner)
    return space


def _batch_norm_train(bn: nn.BatchNorm1d, x: torch.Tensor, out: torch.Tensor):
    """Train-mode batch norm of x (M, C) into `out`, updating the running statistics as nn.BatchNorm1d does."""
    factor = bn.momentum
    if bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if factor is None:
            factor = 1.0 / float(bn.num_batches_tracked)
    mean = x.new_empty(x.shape[1])
    invstd = x.new_empty(x.shape[1])
    torch.ops.aten.native_batch_norm.out(
        x, bn.weight, bn.bias, bn.running_mean, bn.running_var, True, factor or 0.0, bn.eps,
        out=out, save_mean=mean, save_invstd=invstd,
    )  # fmt: skip
    return mean, invstd


class _PairMLPTraining(torch.autograd.Function):
    """The pair embedding in training, forward and backward, with its intermediates in a `_Workspace`.

    The same operations as autograd runs through `PairEmbed.mlp` (the same ATen kernels for batch
    norm and GELU, matrix products for the Linear layers and their gradients), into reused memory.
    """

    @staticmethod
    def forward(ctx, features: torch.Tensor, module: PairEmbed, *params: torch.Tensor) -> torch.Tensor:
        layers = module.layers()
        owner = _Owner()
        space = _workspace(module, owner)
        rows = features.shape[0]
        h = space.get("in", rows, features.shape[1], features)
        stats = [_batch_norm_train(module.mlp[0], features, h)]
        saved = []  # per layer: its input, the batch norm's input and output
        for k, (linear, bn, gelu) in enumerate(layers):
            last = k == len(layers) - 1  # its output leaves the workspace: a tensor of its own
            width = linear.out_features
            z = space.get(f"z{k}", rows, width, features)
            torch.addmm(linear.bias, h, linear.weight.t(), out=z)
            y = (
                features.new_empty(rows, width)
                if last and not gelu
                else space.get(f"y{k}", rows, width, features)
            )
            stats.append(_batch_norm_train(bn, z, y))
            saved.append((h, z, y))
            if gelu:
                out = features.new_empty(rows, width) if last else space.get(f"h{k}", rows, width, features)
                h = torch.ops.aten.gelu.out(y, out=out)
            else:
                h = y
        ctx.owner, ctx.space, ctx.module = owner, space, module
        ctx.stats, ctx.saved = stats, saved
        ctx.features = features
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        if ctx.saved is None:  # its buffers went back to the workspace after the first backward
            raise RuntimeError(
                "jettag's train-mode pair embedding supports one backward pass per forward pass "
                "(retain_graph=True is not supported on the CPU path); run the forward pass again."
            )
        space: _Workspace = ctx.space
        features = ctx.features
        rows = features.shape[0]
        layers = ctx.module.layers()
        grads: list[tuple] = [()] * len(layers)  # per layer: Linear weight, bias, batch-norm weight, bias
        g = grad.contiguous()
        for k in reversed(range(len(layers))):
            (linear, bn, gelu), (h, z, y), (mean, invstd) = layers[k], ctx.saved[k], ctx.stats[k + 1]
            width = linear.out_features
            if gelu:
                gy = torch.ops.aten.gelu_backward.grad_input(
                    g, y, grad_input=space.get("gy", rows, width, features)
                )
            else:
                gy = g
            gz = space.get("gz", rows, width, features)
            gz, g_bn_w, g_bn_b = torch.ops.aten.native_batch_norm_backward.out(
                gy, z, bn.weight, bn.running_mean, bn.running_var, mean, invstd, True, bn.eps,
                [True, True, True], out0=gz, out1=torch.empty_like(mean), out2=torch.empty_like(mean),
            )  # fmt: skip
            # x^T dz: with few inputs and many pairs much faster than dz^T x
            g_w = torch.mm(h.t(), gz).t().contiguous()
            g = torch.mm(gz, linear.weight, out=space.get("gh", rows, linear.in_features, features))
            grads[k] = (g_w, gz.sum(0), g_bn_w, g_bn_b)
        bn0 = ctx.module.mlp[0]
        mean, invstd = ctx.stats[0]
        g_in, g_bn_w, g_bn_b = torch.ops.aten.native_batch_norm_backward(
            g, features, bn0.weight, bn0.running_mean, bn0.running_var, mean, invstd, True, bn0.eps,
            [ctx.needs_input_grad[0], True, True],
        )  # fmt: skip
        ctx.space.owner = None  # the workspace is free again
        ctx.saved = ctx.stats = ctx.features = None
        return (
            g_in if ctx.needs_input_grad[0] else None,
            None,
            g_bn_w,
            g_bn_b,
            *(t for g4 in grads for t in g4),
        )


class PairEmbed(nn.Module):
    """Pairwise features of real particle pairs -> additive attention masks, (b, H, n, n) per bucket.

    The embedding is pointwise over pairs (the reference's 1x1 convolution, here Linear):
    BatchNorm, then (Linear, BatchNorm, GELU) per width, the last GELU optional. The features are
    symmetric, so they are computed and embedded for pairs i >= j only and written to both (i, j)
    and (j, i). A mask holds the bias on real pairs, 0 from padded queries to real keys and -inf
    for every padded key.
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
        in_scale, in_shift = _bn_affine(self.mlp[0])
        folded = []
        for k, (linear, bn, gelu) in enumerate(self.layers()):
            weight, bias = linear.weight, linear.bias
            if k == 0:
                weight, bias = weight * in_scale, bias + weight @ in_shift
            scale, shift = _bn_affine(bn)
            folded.append((weight * scale[:, None], bias * scale + shift, gelu))
        return folded

    def _embed(self, features: torch.Tensor, chunked: bool = True) -> torch.Tensor:
        if self.training:
            return self._embed_training(features)
        layers = self.folded_layers()

        def run(h: torch.Tensor) -> torch.Tensor:
            for weight, bias, gelu in layers:
                h = _linear(h, weight, bias, gelu)
            return h

        if not chunked or features.shape[0] <= self.chunk_size:
            return run(features)
        return torch.cat([run(part) for part in features.split(self.chunk_size)])

    def _embed_training(self, features: torch.Tensor) -> torch.Tensor:
        if _cpu_kernels(features) and not torch.is_autocast_enabled("cpu") and self._plain_layers():
            bn0 = self.mlp[0]
            params = [bn0.weight, bn0.bias]
            params += [
                t for linear, bn, _ in self.layers() for t in (linear.weight, linear.bias, bn.weight, bn.bias)
            ]
            return _PairMLPTraining.apply(features, self, *params)
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

    def forward(self, v: torch.Tensor, mask: torch.Tensor, buckets: Sequence[Bucket]) -> list[torch.Tensor]:
        """One mask (b, H, n, n) per bucket of jets: `v` (B, N, 4), `mask` (B, N), real particles first."""
        kinematics = particle_kinematics(_at_least_float32(v))  # (B, N, 7), each particle once
        # Real pairs i >= j, ordered by jet; the feature arithmetic takes the higher index first, as the reference.
        b, i, j = (mask[:, :, None] & mask[:, None, :]).tril().nonzero(as_tuple=True)
        embedded = self._embed(
            pair_features_from_kinematics(kinematics[b, i], kinematics[b, j], self.eps)
        )  # (M, H)
        masks, first_pair = [], 0
        for bucket in buckets:
            last_pair = first_pair + bucket.num_pairs
            pairs = slice(first_pair, last_pair)
            bb, ii, jj, values = b[pairs] - bucket.start, i[pairs], j[pairs], embedded[pairs]
            length = bucket.length
            out = _padding(mask[bucket.start : bucket.stop, :length], values.dtype)[:, None, None, :]
            out = out.expand(-1, self.num_heads, length, -1).contiguous()  # (b, H, n, n)
            out[bb, :, ii, jj] = values
            out[bb, :, jj, ii] = values
            masks.append(out)
            first_pair = last_pair
        return masks

    def forward_dense(self, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Inference on the full (N, N) grid with static shapes (for export): (B, H, N, N)."""
        kinematics = particle_kinematics(_at_least_float32(v))
        length = kinematics.shape[1]
        ka = kinematics[:, :, None, :].expand(-1, -1, length, -1)
        kb = kinematics[:, None, :, :].expand(-1, length, -1, -1)
        lower = torch.ones(length, length, dtype=torch.bool, device=v.device).tril()[..., None]
        features = pair_features_from_kinematics(
            torch.where(lower, ka, kb), torch.where(lower, kb, ka), self.eps
        )
        embedded = self._embed(features, chunked=False).permute(0, 3, 1, 2)  # (B, H, N, N)
        # where, not a product: padded particles may give NaN features (ONNX's atan2(0, 0))
        bias = torch.where(mask[:, None, :, None], embedded, 0)
        return torch.where(mask[:, None, None, :], bias, float("-inf"))


# Attention scores per CPU chunk of jets, (b, H, n, n) entries: small enough to stay in cache.
CPU_ATTENTION_CHUNK = 8 * 8 * 80 * 80


def _attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, p: float, training: bool
):
    """softmax(q k^T + mask) v, explicitly (q comes scaled by 1/sqrt(d)); on a CPU a few jets at a time.

    Same result as `scaled_dot_product_attention`, whose CPU kernel is slow for ParT's head
    width of 16 and has no dropout (its fallback draws dropout masks slowly). Also the export
    path: SDPA's ONNX decomposition can disagree with its recorded strides.
    """
    batch, heads, n_q, _ = q.shape
    if _exporting():
        return torch.matmul(
            dropout(torch.matmul(q, k.transpose(-2, -1)).add(mask).softmax(dim=-1), p, training), v
        )
    chunk = max(1, CPU_ATTENTION_CHUNK // (heads * n_q * k.shape[-2]))
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()  # once, not per chunk inside matmul
    # split, not slicing: the backward pass then concatenates the chunks' gradients once
    masks = mask.split(chunk) if mask.shape[0] > 1 else [mask] * -(-batch // chunk)
    outs = [
        torch.matmul(
            dropout(torch.matmul(qc, kc.transpose(-2, -1)).add_(mc).softmax(dim=-1), p, training), vc
        )
        for qc, kc, vc, mc in zip(q.split(chunk), k.split(chunk), v.split(chunk), masks, strict=True)
    ]  # (b, H, Nq, d) each
    return outs[0] if len(outs) == 1 else torch.cat(outs)


class Attention(nn.Module):
    """Multi-head attention; the interaction bias and the padding are one additive float mask.

    Inputs are padded (B, N, D) with one mask, or packed tokens (T, D) with one mask per bucket
    of `packing`: only the attention itself then pads, bucket by bucket.
    """

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

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(b, Nq, D) scaled queries, (b, Nk, D) keys and values, mask (b, H or 1, Nq or 1, Nk) -> (b, Nq, D)."""
        batch, n_q, dim = q.shape
        q, k, v = (t.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2) for t in (q, k, v))
        p = self.dropout if self.training else 0.0
        if _cpu_kernels(q) or _exporting():
            out = _attention(q, k, v, mask, p, self.training)
        else:  # (b, H, Nq, d)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype), dropout_p=p, scale=1.0)
        return out.transpose(1, 2).contiguous().view(batch, n_q, dim)

    def _out(self, out: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """The output projection with `scale` (D,) on its output channels folded into it."""
        return _linear(out, self.out_proj.weight * scale[:, None], self.out_proj.bias * scale)

    def forward(
        self, x: torch.Tensor, masks: Sequence[torch.Tensor], packing: Packing | None, scale: torch.Tensor
    ) -> torch.Tensor:
        """Self-attention of the particles."""
        qkv = _linear(x, *self._in_proj())  # (B, N, 3D) or (T, 3D)
        if packing is None:
            return self._out(self.attend(*qkv.chunk(3, dim=-1), masks[0]), scale)
        out = [
            packing.unpad(self.attend(*packing.pad(qkv, k).chunk(3, dim=-1), mask), k)
            for k, mask in enumerate(masks)
        ]
        return self._out(torch.cat(out), scale)

    def forward_class(
        self,
        cls: torch.Tensor,
        keys_cls: torch.Tensor,
        keys: torch.Tensor,
        masks: Sequence[torch.Tensor],
        packing: Packing | None,
        scale: torch.Tensor,
    ) -> torch.Tensor:
        """Class attention: the query is `cls` (B, 1, D), keys and values come from [keys_cls, keys]."""
        dim = cls.shape[-1]
        w, b = self._in_proj()
        q = _linear(cls, w[:dim], b[:dim])  # (B, 1, D)
        kv_cls = _linear(keys_cls, w[dim:], b[dim:])  # (B, 1, 2D)
        kv = _linear(keys, w[dim:], b[dim:])  # (B, N, 2D) or (T, 2D)
        if packing is None:
            return self._out(
                self.attend(q, *torch.cat((kv_cls, kv), dim=1).chunk(2, dim=-1), masks[0]), scale
            )
        out = []
        for k, (bucket, mask) in enumerate(zip(packing.buckets, masks, strict=True)):
            jets = slice(bucket.start, bucket.stop)
            kv_k = torch.cat((kv_cls[jets], packing.pad(kv, k)), dim=1)  # (b, 1 + n, 2D)
            out.append(self.attend(q[jets], *kv_k.chunk(2, dim=-1), mask))
        return self._out(torch.cat(out), scale)


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
        self.dropout = Dropout(dropout)
        self.pre_fc_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn_dim)  # then GELU
        self.act_dropout = Dropout(activation_dropout)
        self.post_fc_norm = nn.LayerNorm(ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.resid_scale = nn.Parameter(torch.ones(dim))

    def _head_scale(self) -> torch.Tensor:
        return self.head_scale.repeat_interleave(self.head_dim)  # (D,)

    def _finish(self, attended: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.post_attn_norm(attended)) + residual
        h = self.act_dropout(_linear(self.pre_fc_norm(x), self.fc1.weight, self.fc1.bias, gelu=True))
        h = self.dropout(_linear(self.post_fc_norm(h), self.fc2.weight, self.fc2.bias))
        return torch.addcmul(h, self.resid_scale, x)

    def forward(
        self, x: torch.Tensor, masks: Sequence[torch.Tensor], packing: Packing | None = None
    ) -> torch.Tensor:
        """`x` (B, N, D) with one mask, or packed tokens (T, D) with one mask per bucket of `packing`."""
        return self._finish(self.attn(self.pre_attn_norm(x), masks, packing, self._head_scale()), x)


class ClassBlock(Block):
    """Class attention (CaiT): the class token attends to [class token, particles]."""

    def forward(
        self,
        cls: torch.Tensor,
        x: torch.Tensor,
        masks: Sequence[torch.Tensor],
        packing: Packing | None = None,
    ) -> torch.Tensor:
        # Keys and values: the LayerNorm of [class token, particles], token by token. As in the
        # reference model, the query is the class token before normalization.
        keys_cls, keys = self.pre_attn_norm(cls), self.pre_attn_norm(x)
        return self._finish(
            self.attn.forward_class(cls, keys_cls, keys, masks, packing, self._head_scale()), cls
        )


def _sorted_and_trimmed(x: torch.Tensor, v: torch.Tensor, mask: torch.Tensor):
    """Jets by decreasing multiplicity, real particles first (in their order), padding cut to the longest jet.

    Returns x, v, mask and the order of the jets (None if unchanged). Scores do not depend on
    either reordering; keeping the particle order keeps the pair features bit for bit.
    """
    counts = mask.sum(1)
    length = max(int(counts.max()), 1) if mask.numel() else 1
    positions = torch.arange(mask.shape[1], device=mask.device)
    if not torch.equal(mask, positions < counts[:, None]):  # padding in between: move it to the end
        index = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices
        x, v, mask = (t.gather(1, index[..., None].expand_as(t)) for t in (x, v, mask[..., None]))
        mask = mask[..., 0]
    order = torch.sort(counts, descending=True, stable=True).indices
    if torch.equal(order, torch.arange(len(order), device=order.device)):
        order = None
    else:
        x, v, mask = x[order], v[order], mask[order]
    return x[:, :length], v[:, :length], mask[:, :length], order


def _head(dim: int, num_classes: int, layers: Sequence[Sequence]) -> nn.Module:
    """A Linear, or weaver's `fc_params` MLP: (Linear, activation, Dropout) per (width, dropout[, activation])."""
    if not layers:
        return nn.Linear(dim, num_classes)
    modules: list[nn.Module] = []
    for width, drop, *act in layers:
        activation = nn.GELU() if (act or ["relu"])[0] == "gelu" else nn.ReLU()
        modules.append(nn.Sequential(nn.Linear(dim, width), activation, nn.Dropout(drop)))
        dim = width
    return nn.Sequential(*modules, nn.Linear(dim, num_classes))


class ParticleTransformer(JetTagger):
    """ParT; `use_interaction=False` gives the plain transformer baseline ("ParT plain").

    The defaults are the reference configuration (2.14M parameters for 17 inputs, 10 classes),
    that of the published models: `pair_final_activation=True` is weaver's
    `use_pre_activation_pair=False`. `head_layers` adds hidden layers to the classifier head, as
    weaver's `fc_params`: [(width, dropout[, "relu" | "gelu"]), ...]. Weights are initialised as
    weaver initialises ParT (xavier-uniform Linear layers, with q, k, v treated separately, and
    the output layers of block l scaled by 1/sqrt(2 l)).
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
        head_layers: Sequence[Sequence] = (),
    ):
        super().__init__()
        embed_dims, pair_embed_dims = tuple(embed_dims), tuple(pair_embed_dims)
        dim = embed_dims[-1]
        if dim % num_heads:
            raise ValueError(f"the embedding width {dim} is not divisible by num_heads={num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.num_classes = num_classes
        self.head_layers = [tuple(layer) for layer in head_layers]
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
        self.head = _head(dim, num_classes, self.head_layers)
        self.dense = False  # static shapes at inference, for export (see the module docstring)
        self._init_weights()

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

    def forward_features(self, x: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The backbone: (B, N, C), (B, N, 4), (B, N) -> (B, D) normalized class token."""
        mask = mask.bool()
        if (self.dense or _exporting()) and not self.training:
            return self._forward_static(x, v, mask)

        x, v, mask, order = _sorted_and_trimmed(x, v, mask)
        counts = mask.sum(1).tolist()
        # Training works on packed tokens: the backward pass, the heavier part, then skips all padding.
        # Inference runs each bucket padded through the blocks unless that pads much (random batches).
        packed = self.training
        buckets = plan_buckets(counts, packed)
        if not packed and sum((k.stop - k.start) * k.length for k in buckets) > PACK_ABOVE * sum(counts):
            packed, buckets = True, plan_buckets(counts, True)
        packing = Packing(counts, buckets, mask.device)
        h = self.embed(x, mask)  # (T, D) real particles, batch norm over the whole batch
        if self.pair_embed is not None:
            masks = self.pair_embed(v, mask, buckets)  # [(b, H, n, n)] per bucket
        else:
            masks = [_padding(mask[k.start : k.stop, : k.length], h.dtype)[:, None, None, :] for k in buckets]
        masks = [self._autocast(m) for m in masks]
        cls_masks = [
            _padding(F.pad(mask[k.start : k.stop, : k.length], (1, 0), value=True), h.dtype)[:, None, None, :]
            for k in buckets
        ]  # (b, 1, 1, 1 + n): the class token is always a key
        cls = self.cls_token.expand(mask.shape[0], -1, -1)
        if packed:  # the token-wise layers work on the real particles, attention pads them per bucket
            for block in self.blocks:
                h = block(h, masks, packing)
            for block in self.cls_blocks:
                cls = block(cls, h, cls_masks, packing)
        else:  # inference: each bucket goes through the blocks padded, without repacking in every block
            parts = []
            for k, bucket in enumerate(buckets):
                h_k, cls_k = packing.pad(h, k), cls[bucket.start : bucket.stop]
                for block in self.blocks:
                    h_k = block(h_k, masks[k : k + 1])
                for block in self.cls_blocks:
                    cls_k = block(cls_k, h_k, cls_masks[k : k + 1])
                parts.append(cls_k)
            cls = torch.cat(parts)
        cls = cls.squeeze(1)
        if order is not None:
            cls = cls[torch.argsort(order)]
        return self.norm(cls)

    def forward_tokens(self, x: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-particle embeddings after the particle-attention blocks: (B, N, C), (B, N, 4), (B, N) -> (B, N, D),
        zeros at padded positions. What particle-level pretraining objectives read (no class token)."""
        mask = mask.bool()
        xs, vs, ms, order = _sorted_and_trimmed(x, v, mask)
        counts = ms.sum(1).tolist()
        buckets = plan_buckets(counts, True)
        packing = Packing(counts, buckets, ms.device)
        h = self.embed(xs, ms)  # (T, D): real particles, jet after jet in the sorted order
        if self.pair_embed is not None:
            masks = self.pair_embed(vs, ms, buckets)
        else:
            masks = [_padding(ms[k.start : k.stop, : k.length], h.dtype)[:, None, None, :] for k in buckets]
        masks = [self._autocast(m) for m in masks]
        for block in self.blocks:
            h = block(h, masks, packing)
        # back to the caller's layout: the tokens' row-major order is that of the real particles of
        # the sorted jets, and sorting kept the particle order within each jet
        if order is not None:
            jets = torch.repeat_interleave(order, torch.as_tensor(counts, device=h.device))
            h = h[torch.argsort(jets, stable=True)]
        out = h.new_zeros(*mask.shape, h.shape[-1])  # (B, N, D)
        out[mask] = h
        return out

    def _forward_static(self, x: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Inference on the padded batch as given: no data-dependent shapes (for export)."""
        h = self.embed(x, mask, packed=False)  # (B, N, D)
        if self.pair_embed is not None:
            attn_mask = self.pair_embed.forward_dense(v, mask)  # (B, H, N, N)
        else:
            attn_mask = _padding(mask, h.dtype)[:, None, None, :]  # (B, 1, 1, N)
        attn_mask = self._autocast(attn_mask)
        for block in self.blocks:
            h = block(h, [attn_mask])
        cls = self.cls_token.expand(h.shape[0], -1, -1)
        cls_mask = _padding(F.pad(mask, (1, 0), value=True), h.dtype)[:, None, None, :]  # (B, 1, 1, 1 + N)
        for block in self.cls_blocks:
            cls = block(cls, h, [cls_mask])
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
        block, each further class block, the final norm on top."""
        cls_blocks = [f"cls_blocks.{i}" for i in range(len(self.cls_blocks))]
        return [
            ("embed", "pair_embed"),
            *((f"blocks.{i}",) for i in range(len(self.blocks))),
            ("cls_token", *cls_blocks[:1]),
            *((name,) for name in cls_blocks[1:]),
            ("norm",),
        ]

    def reset_head(self, num_classes: int) -> None:
        """A new, freshly initialised head (hidden layers included) for `num_classes`."""
        device = self.cls_token.device
        self.num_classes = num_classes
        self.head = _head(self.dim, num_classes, self.head_layers).to(device)
        for module in self.head.modules():
            if isinstance(module, nn.Linear):
                _init_linear(module)


def _init_linear(linear: nn.Linear, qkv: bool = False) -> None:
    if qkv:  # bound from the fan of each of q, k, v
        bound = math.sqrt(6.0 / (linear.weight.shape[0] // 3 + linear.weight.shape[1]))
        nn.init.uniform_(linear.weight, -bound, bound)
    else:
        nn.init.xavier_uniform_(linear.weight)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)
