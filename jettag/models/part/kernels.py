"""ParT's CPU kernels: the arithmetic of plain PyTorch operations, done faster on a CPU.

Each operation takes the resolved execution path (`path.ExecutionPath`) and computes the same
result whichever it is; only "cpu_kernels" takes the CPU-specific way:

- `linear`: one oneDNN call with the GELU fused, at inference in float32 (the kernel
  torch.compile uses): 10-25% faster than `F.linear`, which first copies the bias into the output;
- `attention`: softmax(q k^T + mask) v as matmul + softmax, a few jets at a time so the scores
  stay in cache (the fused CPU kernel of `scaled_dot_product_attention` is slow at ParT's head
  width of 16 and has no dropout; its fallback draws dropout masks slowly). "dense" takes the
  same explicit form on whole batches: SDPA's ONNX decomposition can disagree with its strides;
- `dropout`: Bernoulli(1 - p) masks drawn as uniform < 1 - p, from NumPy's PCG64 split over
  threads (`uniform`), several times faster than torch's draws, and kept for the backward pass as
  booleans (a quarter of a float mask's memory);
- `workspace_for`: buffers kept from one training step to the next (the pair MLP's, see
  `pair_embed`), since fresh large tensors cost more in page faults than the arithmetic in them;
- `gelu_native`: PyTorch's own vectorized GELU, forward and backward, never oneDNN's: oneDNN compiles
  a kernel for every new tensor shape and keeps up to 1024 of them (~0.26 MB each, forward and
  backward), and ParT's shapes change with every batch, so the resident memory of a training run
  grew by ~0.5 GB over its first epochs (memray: `jit_uni_eltwise_fwd/bwd` code buffers). The
  native kernel is as fast.

oneDNN (through ideep) also keeps every matrix-product primitive it built, one per input shape, up to
1024 in each of two caches; inference through `linear`'s fused call sees a new shape with almost every
bucket of jets, and the resident memory of a reference-size ParT scoring jets grew from 0.4 to 1.9 GB
over 60 batches. Importing this module bounds both caches to `ONEDNN_CACHE_CAPACITY` entries (flat at
~0.4 GB, as fast), unless the user set `ONEDNN_PRIMITIVE_CACHE_CAPACITY` or `LRU_CACHE_CAPACITY`;
oneDNN reads them when it builds its first primitive.
"""

from __future__ import annotations

import math
import os
import weakref
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jettag.models.part.path import ExecutionPath

CPU = ExecutionPath.CPU_KERNELS

_RNG_POOL: ThreadPoolExecutor | None = None
_RNG_WORKERS = 0
RNG_SPLIT = 1 << 17  # numbers per CPU thread before a draw is split over threads


def _fill_uniform(seed: np.random.SeedSequence, out: np.ndarray) -> None:
    np.random.Generator(np.random.PCG64(seed)).random(dtype=np.float32, out=out)


def uniform(shape: torch.Size) -> torch.Tensor:
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


def rng_workers() -> int:
    """Threads of the pool that splits large draws (0 before the first split draw)."""
    return _RNG_WORKERS


def dropout(x: torch.Tensor, p: float, training: bool, path: ExecutionPath) -> torch.Tensor:
    """`F.dropout`; on "cpu_kernels" the mask is drawn as uniform < 1 - p."""
    if not training or p == 0:
        return x
    if path is not CPU or p >= 1:
        return F.dropout(x, p, training=True)
    keep = 1.0 - p
    kept = uniform(x.shape) < keep  # bool: what the backward pass keeps is 1 byte per entry, not 4
    return torch.mul(x, kept).mul_(1.0 / keep)


@contextmanager
def without_onednn() -> Iterator[None]:
    """PyTorch's own CPU kernels for the ops inside (the switch is process-wide; set back on exit)."""
    if not torch._C._get_mkldnn_enabled():
        yield
        return
    torch._C._set_mkldnn_enabled(False)
    try:
        yield
    finally:
        torch._C._set_mkldnn_enabled(True)


class NativeGelu(torch.autograd.Function):
    """GELU (erf form) with PyTorch's own kernels forward and backward (see the module docstring)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        with without_onednn():
            return torch.ops.aten.gelu(x)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        with without_onednn():
            return torch.ops.aten.gelu_backward(grad, x)


def gelu_native(x: torch.Tensor) -> torch.Tensor:
    """`F.gelu`; on a CPU, never through oneDNN (a compiled kernel kept per tensor shape)."""
    if x.device.type != "cpu":
        return F.gelu(x)
    if torch.is_grad_enabled() and x.requires_grad:
        return NativeGelu.apply(x)
    with without_onednn():
        return F.gelu(x)


def gelu_out(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """GELU of x into `out` (CPU, no autograd), PyTorch's own kernel."""
    with without_onednn():
        return torch.ops.aten.gelu.out(x, out=out)


def gelu_backward_out(grad: torch.Tensor, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The gradient of GELU at x times `grad`, into `out` (CPU), PyTorch's own kernel."""
    with without_onednn():
        return torch.ops.aten.gelu_backward.grad_input(grad, x, grad_input=out)


ONEDNN_CACHE_CAPACITY = 16
for _name in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):  # oneDNN's own and ideep's
    os.environ.setdefault(_name, str(ONEDNN_CACHE_CAPACITY))

_ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    path: ExecutionPath,
    gelu: bool = False,
) -> torch.Tensor:
    """`F.linear`, then GELU if asked; on "cpu_kernels" without autograd in float32, one oneDNN call."""
    if (
        path is CPU
        and _ONEDNN_LINEAR
        and not torch.is_grad_enabled()
        and x.dtype == weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
    ):
        return torch.ops.mkldnn._linear_pointwise(
            x, weight, bias, "gelu" if gelu else "none", [], "none" if gelu else ""
        )
    out = F.linear(x, weight, bias)
    return gelu_native(out) if gelu else out


def mlp(layers: nn.Sequential, h: torch.Tensor, path: ExecutionPath) -> torch.Tensor:
    """`layers(h)`, each (Linear, GELU) pair through `linear`."""
    modules = list(layers)
    k = 0
    while k < len(modules):
        module = modules[k]
        if isinstance(module, nn.Linear):
            gelu = k + 1 < len(modules) and isinstance(modules[k + 1], nn.GELU)
            h = linear(h, module.weight, module.bias, path, gelu)
            k += 2 if gelu else 1
        else:
            h = module(h)
            k += 1
    return h


# Attention scores per CPU chunk of jets, (b, H, n, n) entries: small enough to stay in cache.
CPU_ATTENTION_CHUNK = 8 * 8 * 80 * 80


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    p: float,
    training: bool,
    path: ExecutionPath,
) -> torch.Tensor:
    """softmax(q k^T + mask) v: q (b, H, Nq, d) comes scaled by 1/sqrt(d), mask (b or 1, H or 1, Nq or 1, Nk)."""
    if path is ExecutionPath.GENERIC:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype), dropout_p=p, scale=1.0)
    if path is not CPU:  # dense: the whole batch at once
        scores = torch.matmul(q, k.transpose(-2, -1)).add(mask).softmax(dim=-1)
        return torch.matmul(dropout(scores, p, training, path), v)
    batch, heads, n_q, _ = q.shape
    chunk = max(1, CPU_ATTENTION_CHUNK // (heads * n_q * k.shape[-2]))
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()  # once, not per chunk inside matmul
    # split, not slicing: the backward pass then concatenates the chunks' gradients once
    masks = mask.split(chunk) if mask.shape[0] > 1 else [mask] * -(-batch // chunk)
    outs = [
        torch.matmul(
            dropout(torch.matmul(qc, kc.transpose(-2, -1)).add_(mc).softmax(dim=-1), p, training, path), vc
        )
        for qc, kc, vc, mc in zip(q.split(chunk), k.split(chunk), v.split(chunk), masks, strict=True)
    ]  # (b, H, Nq, d) each
    return outs[0] if len(outs) == 1 else torch.cat(outs)


class Workspace:
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


class Owner:
    """Held by an autograd node for as long as it lives; the node's workspace is busy meanwhile."""


# per module, kept outside it (a module's state must stay copyable and picklable)
WORKSPACES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def workspace_for(module: nn.Module, owner: Owner) -> Workspace:
    """A workspace of `module` that no live autograd node uses (several forward passes may await backward)."""
    pool = WORKSPACES.setdefault(module, [])
    for space in pool:
        if space.free():
            break
    else:
        space = Workspace()
        pool.append(space)
    space.owner = weakref.ref(owner)
    return space


def batch_norm_train(bn: nn.BatchNorm1d, x: torch.Tensor, out: torch.Tensor) -> Sequence[torch.Tensor]:
    """Train-mode batch norm of x (M, C) into `out`, updating the running statistics as nn.BatchNorm1d does;
    returns the batch mean and inverse standard deviation (for the backward pass)."""
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
