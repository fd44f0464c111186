"""PFN and P-CNN against short independent implementations written here from the papers.

No published PFN or P-CNN files exist, so the reference is the architecture as the papers describe it,
in numpy (float64), one jet at a time with exactly its own particles (no padding): whatever jettag does
with padded batches must give the same eval-mode scores. The weights are jettag's, read by layer.

- PFN (Komiske, Metodiev, Thaler, JHEP 01 (2019) 121, "particle flow network"): a per-particle map
  Phi (dense layers with ReLU), summed over the jet's particles, then F (dense layers with ReLU) and a
  linear output; the ParT paper's baseline uses Phi = F = (128, 128, 128).
- P-CNN (CMS DeepAK8, CMS-DP-2017/049, as the ParT paper's baseline): the pT-ordered particle list as a
  1D sequence; input batch norm, a width-3 convolution (zero padding at both ends) with batch norm and
  ReLU, then ResNet units of two (convolution, batch norm, ReLU) layers plus a shortcut (identity, or a
  1x1 convolution where the width or stride changes); the first unit of each later stage has stride 2;
  global average pooling over the sequence, dense layers with ReLU, linear output.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from jettag.models import ParticleCNN, ParticleFlowNetwork

COUNTS = [40, 1, 17, 33, 8, 2, 3]


def toy_batch(counts=COUNTS, features=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch, length = len(counts), max(counts) + 3  # padded beyond the longest jet too
    mask = torch.arange(length)[None, :] < torch.tensor(counts)[:, None]
    x = torch.randn(batch, length, features, generator=g) * mask[..., None]
    v = torch.randn(batch, length, 4, generator=g) * mask[..., None]  # unused by both models
    return x, v, mask


def randomize_statistics(model: nn.Module, seed: int = 1) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.3 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.empty(m.running_var.shape).uniform_(0.5, 2.0, generator=g))
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
    return model.eval()


def numpy_params(module: nn.Module) -> dict[str, np.ndarray]:
    return {k: t.detach().double().numpy() for k, t in module.state_dict().items()}


def relu(a):
    return np.maximum(a, 0)


def dense(a, w, b):
    return a @ w[f"{b}.weight"].T + w[f"{b}.bias"]


def batch_norm(a, w, name, eps=1e-5):
    """Eval-mode batch norm over the last axis."""
    scale = w[f"{name}.weight"] / np.sqrt(w[f"{name}.running_var"] + eps)
    return (a - w[f"{name}.running_mean"]) * scale + w[f"{name}.bias"]


def conv1d(a, weight, bias, stride=1):
    """(n, C_in) -> (n', C_out): kernel width K (odd), zero padding (K - 1) / 2 on both sides."""
    width = weight.shape[-1]
    half = width // 2
    padded = np.concatenate([np.zeros((half, a.shape[1])), a, np.zeros((half, a.shape[1]))])
    starts = range(0, len(a), stride)  # output j is centred on input j * stride
    out = np.stack([np.einsum("oik,ki->o", weight, padded[s : s + width]) for s in starts])
    return out + (0 if bias is None else bias)


# --- PFN -----------------------------------------------------------------------------------------


def pfn_reference(w, jet, phi_layers, f_layers):
    h = jet
    for name in phi_layers:
        h = relu(dense(h, w, name))
    h = h.sum(0)  # sum over the jet's particles
    for name in f_layers:
        h = relu(dense(h, w, name))
    return dense(h, w, "head")


def test_pfn_equals_the_paper_implementation():
    torch.manual_seed(0)
    model = ParticleFlowNetwork(7, 4, phi_dims=(16, 24, 8), f_dims=(12, 10)).eval()
    w = numpy_params(model)
    linear = lambda seq: [f"{seq}.{i}" for i, m in enumerate(getattr(model, seq)) if isinstance(m, nn.Linear)]  # noqa: E731
    x, v, mask = toy_batch()
    with torch.no_grad():
        got = model(x, v, mask).double().numpy()
    expected = np.stack([pfn_reference(w, x[i, :n].double().numpy(), linear("phi"), linear("f"))
                         for i, n in enumerate(COUNTS)])  # fmt: skip
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


# --- P-CNN ---------------------------------------------------------------------------------------


def pcnn_reference(w, jet, units, fc_layers):
    """`units`: (prefix, stride, has a shortcut conv) per ResNet unit."""
    h = batch_norm(jet, w, "input_norm")
    h = relu(batch_norm(conv1d(h, w["stem.conv.weight"], w["stem.conv.bias"]), w, "stem.norm"))
    for prefix, stride, shortcut in units:
        out = conv1d(h, w[f"{prefix}.conv1.conv.weight"], w[f"{prefix}.conv1.conv.bias"], stride)
        out = relu(batch_norm(out, w, f"{prefix}.conv1.norm"))
        out = conv1d(out, w[f"{prefix}.conv2.conv.weight"], w[f"{prefix}.conv2.conv.bias"])
        out = relu(batch_norm(out, w, f"{prefix}.conv2.norm"))
        identity = conv1d(h, w[f"{prefix}.shortcut.weight"], None, stride) if shortcut else h
        h = out + identity
    h = h.mean(0)  # global average pooling over the sequence
    for name in fc_layers:
        h = relu(dense(h, w, name))
    return dense(h, w, "head")


@pytest.mark.parametrize(
    "conv_params",
    [[(8,), (8, 8), (16, 16), (16,)], [(32,), (64, 64), (64, 64), (128, 128)]],
    ids=["small", "paper"],
)
def test_pcnn_equals_the_paper_implementation(conv_params):
    torch.manual_seed(0)
    model = randomize_statistics(ParticleCNN(7, 4, conv_params=conv_params, fc_params=[(16, 0.2), (12, 0.1)]))
    w = numpy_params(model)
    # the units in order: stages after the first start with stride 2; a shortcut conv where shapes change
    units, width = [], conv_params[0][0]
    for i, stage in enumerate(conv_params[1:]):
        for j, out in enumerate(stage):
            stride = 2 if i > 0 and j == 0 else 1
            units.append((f"units.{len(units)}", stride, out != width or stride != 1))
            width = out
    fc_layers = [f"fc.{i}" for i, m in enumerate(model.fc) if isinstance(m, nn.Linear)]
    x, v, mask = toy_batch()
    with torch.no_grad():
        got = model(x, v, mask).double().numpy()
    expected = np.stack(
        [pcnn_reference(w, x[i, :n].double().numpy(), units, fc_layers) for i, n in enumerate(COUNTS)]
    )
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
