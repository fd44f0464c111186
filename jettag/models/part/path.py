"""How a ParticleTransformer does its work: one attribute, `model.path`, names the execution path.

    auto         the default: at each call, "dense" while torch.onnx.export, torch.export or
                 torch.compile traces the model, otherwise "cpu_kernels" for inputs on a CPU and
                 "generic" for inputs on any other device.
    cpu_kernels  data-dependent shapes (jets sorted by multiplicity and cut into buckets, tokens
                 packed, pair features for real pairs only) computed with jettag's CPU kernels
                 (`kernels`): oneDNN linear layers with the GELU fused at inference, attention as
                 matmul + softmax a few jets at a time, dropout masks from uniform draws, the
                 training pair MLP in reused buffers. Inputs must be on a CPU.
    generic      the same shapes with plain PyTorch operations (`scaled_dot_product_attention`,
                 `F.linear`, `F.dropout`, autograd through the pair MLP): what a GPU runs, and on
                 a CPU the reference the kernels are tested against.
    dense        inference on the padded batch as given, with static shapes: the pair embedding on
                 the full (N, N) grid, attention as matmul + softmax on whole batches, plain
                 PyTorch operations; what export needs (more work, the same scores). Training has
                 no static-shape form: in train mode the shapes are those of "generic".

Every path gives the same scores (to float32 rounding; tests compare them).
"""

from __future__ import annotations

from enum import StrEnum

import torch

from jettag.errors import ConfigError


class ExecutionPath(StrEnum):
    AUTO = "auto"
    CPU_KERNELS = "cpu_kernels"
    GENERIC = "generic"
    DENSE = "dense"


def execution_path(value: str) -> ExecutionPath:
    """`value` as an ExecutionPath, or one sentence naming the choices."""
    try:
        return ExecutionPath(value)
    except ValueError:
        choices = ", ".join(p.value for p in ExecutionPath)
        raise ConfigError(
            f"model.path={value!r} is not an execution path of ParT; use one of {choices}."
        ) from None


def tracing() -> bool:
    """Whether an exporter or compiler is tracing the model (it needs static shapes)."""
    return torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting() or torch.compiler.is_compiling()


def resolve(path: ExecutionPath, device: torch.device) -> ExecutionPath:
    """The path one call takes: `path` itself unless it is "auto" (see the module docstring)."""
    if path is ExecutionPath.CPU_KERNELS and device.type != "cpu":
        raise ConfigError(
            f"model.path=cpu_kernels needs the jets on a CPU, not on {device}; use auto or generic."
        )
    if path is not ExecutionPath.AUTO:
        return path
    if tracing():
        return ExecutionPath.DENSE
    return ExecutionPath.CPU_KERNELS if device.type == "cpu" else ExecutionPath.GENERIC
