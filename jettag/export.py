"""ONNX export of a trained tagger, for inference outside Python (ONNX Runtime in C++, CMSSW).

The exported graph takes, for B jets padded to N particles (both dynamic):

    x     (B, N, C) float32  standardized particle features, in the order of the feature set
    v     (B, N, 4) float32  particle four-momenta (px, py, pz, E) in GeV
    mask  (B, N)    float32  1 for a real particle, 0 for padding

and returns `scores` (B, K) float32, softmax probabilities in class order. The mask is float, not
bool, because CMSSW's ONNX Runtime wrapper (`cms::Ort::ONNXRuntime`) feeds float inputs only; any
non-zero value counts as a real particle. Every model takes all three inputs, used or not, so one
C++ producer serves them all.

ParT's pair embedding picks the real particle pairs with `nonzero`, a data-dependent size that
`torch.export` cannot trace with dynamic shapes; ParT has a static-shape execution path for export
(all N x N pairs, same scores), which the export chooses (`path = "dense"`, see
`jettag.models.part.path`) in a copy of the model. Every export is checked against the unmodified PyTorch model with ONNX Runtime.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from jettag.errors import ConfigError
from jettag.inference import TrainedModel
from jettag.models.base import class_scores
from jettag.models.part import ExecutionPath, ParticleTransformer

TOLERANCE = 1e-4  # largest accepted |ONNX Runtime - PyTorch| on a score

# What each named particle variable is, for the people who compute the inputs in C++.
VARIABLES = {
    "part_pt": "particle pT",
    "part_eta": "particle pseudorapidity",
    "part_phi": "particle azimuth",
    "part_pt_log": "ln(particle pT)",
    "part_e_log": "ln(particle energy)",
    "part_logptrel": "ln(particle pT / jet pT)",
    "part_logerel": "ln(particle energy / jet energy)",
    "part_deta": "(particle eta - jet eta) * sign(jet eta)",
    "part_dphi": "particle phi - jet phi, wrapped into [-pi, pi)",
    "part_deltaR": "sqrt(part_deta^2 + part_dphi^2)",
    "part_d0": "tanh(part_d0val)",
    "part_dz": "tanh(part_dzval)",
}


class ScoresModel(nn.Module):
    """The exported function: float mask in, softmax scores out (the models return logits)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return class_scores(self.model(x, v, mask != 0))


def export_friendly(model: nn.Module) -> nn.Module:
    """A float32 CPU copy of `model` in eval mode, on its static-shape execution path (ParT's "dense")."""
    model = copy.deepcopy(model).cpu().float().eval()
    for module in model.modules():
        if isinstance(module, ParticleTransformer):
            module.path = ExecutionPath.DENSE
    return model


def probe_jets(batch: int, length: int, num_features: int, seed: int) -> dict[str, np.ndarray]:
    """Random jets of 1..length particles (the first has `length`): collimated, massless, pT-ordered."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, length + 1, batch)
    counts[0] = length
    mask = np.arange(length)[None, :] < counts[:, None]
    x = np.clip(rng.normal(size=(batch, length, num_features)), -5, 5) * mask[..., None]
    pt = -np.sort(-rng.exponential(20, (batch, length)), axis=1) + 0.5
    eta = rng.uniform(-2, 2, (batch, 1)) + rng.normal(0, 0.2, (batch, length))
    phi = rng.uniform(-np.pi, np.pi, (batch, 1)) + rng.normal(0, 0.2, (batch, length))
    v = np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta), pt * np.cosh(eta)], axis=-1)
    v = v * mask[..., None]
    return {"x": x.astype(np.float32), "v": v.astype(np.float32), "mask": mask.astype(np.float32)}


def _hypot(a, b):
    """aten::hypot has no ONNX translation; sqrt(a^2 + b^2) is exact enough for momenta in GeV."""
    from onnxscript import opset18 as op

    return op.Sqrt(op.Add(op.Mul(a, a), op.Mul(b, b)))


def export_onnx(trained: TrainedModel, path: str | Path, opset: int = 18) -> float:
    """Write the ONNX model and its JSON sidecar; return the largest score difference to PyTorch."""
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ConfigError(
            "exporting needs onnx, onnxscript and onnxruntime; pip install 'jettag[onnx]'."
        ) from None
    from torch.nn.attention import SDPBackend, sdpa_kernel

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    num_features = trained.features.num_features
    length = next(n for n in (23, 29, 31) if n != num_features)  # a size no other dimension has
    example = probe_jets(3, length, num_features, seed=0)
    batch, particles = torch.export.Dim("batch"), torch.export.Dim("particles")
    dynamic = {name: {0: batch, 1: particles} for name in ("x", "v", "mask")}
    # Traced with the math attention kernel: with the fused CPU kernel, the attention output's memory
    # layout differs from the one the exporter's decomposition gives, and (torch 2.13) the export fails.
    with sdpa_kernel(SDPBackend.MATH):
        program = torch.onnx.export(
            ScoresModel(export_friendly(trained.model)).eval(),
            tuple(torch.from_numpy(example[k]) for k in ("x", "v", "mask")),
            input_names=["x", "v", "mask"],
            output_names=["scores"],
            opset_version=opset,
            dynamo=True,
            dynamic_shapes=dynamic,
            custom_translation_table={torch.ops.aten.hypot.default: _hypot},
            verbose=False,
        )
    info = sidecar(trained, opset)
    program.model.metadata_props["jettag"] = json.dumps(info)
    program.save(str(path), external_data=False)
    path.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    difference = compare_with_torch(path, trained.model, num_features)
    if not difference <= TOLERANCE:
        path.unlink()
        path.with_suffix(".json").unlink()
        raise RuntimeError(
            f"the exported model differs from PyTorch by {difference:.3g} on probe jets (> {TOLERANCE}); "
            "a model's export path (e.g. ParT's dense pair embedding) no longer matches its forward."
        )
    return difference


def compare_with_torch(path: str | Path, model: nn.Module, num_features: int) -> float:
    """Largest |ONNX Runtime - PyTorch| score on probe jets of sizes unlike the export's."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    reference = ScoresModel(copy.deepcopy(model).cpu().float().eval())
    worst = 0.0
    for seed, (batch, length) in enumerate([(1, 1), (2, 7), (5, 40), (1, 130)]):
        jets = probe_jets(batch, length, num_features, seed=seed + 1)
        with torch.inference_mode():
            expected = reference(*(torch.from_numpy(jets[k]) for k in ("x", "v", "mask"))).numpy()
        (scores,) = session.run(["scores"], jets)
        worst = max(worst, float(np.abs(scores - expected).max()))
    return worst if math.isfinite(worst) else math.inf


def sidecar(trained: TrainedModel, opset: int) -> dict:
    """What a C++ user needs to build the inputs and read the outputs."""
    features = trained.features
    entries = []
    for f in features.features:
        entry = {"name": f.name, "definition": VARIABLES.get(f.name, f"the file's particle branch {f.name}")}
        if f.center is None:
            entry["transform"] = "x"
        else:
            entry |= {"center": f.center, "scale": f.scale, "min": f.lo, "max": f.hi}
            entry["transform"] = "min(max((x - center) * scale, min), max)"
        entries.append(entry)
    return {
        "format": "jettag-onnx/1",
        "model": type(trained.model).__name__,
        "checkpoint": str(trained.checkpoint),
        "opset": opset,
        "class_names": trained.class_names,
        "background": trained.class_names[trained.background],
        "inputs": {
            "x": {
                "shape": ["batch", "particles", features.num_features],
                "dtype": "float32",
                "content": "standardized particle features in the order of feature_set.features",
            },
            "v": {
                "shape": ["batch", "particles", 4],
                "dtype": "float32",
                "content": "particle four-momenta (px, py, pz, E) in GeV",
            },
            "mask": {
                "shape": ["batch", "particles"],
                "dtype": "float32",
                "content": "1 for a real particle, 0 for padding",
            },
        },
        "outputs": {
            "scores": {
                "shape": ["batch", len(trained.class_names)],
                "dtype": "float32",
                "content": "softmax probabilities, one per class in class_names order",
            }
        },
        "particles": (
            f"each jet's particles sorted by decreasing pT, at most max_particles ({features.max_particles}) kept; "
            "padding after the last real particle, zeros in x, v and mask; jets without particles cannot be scored"
        ),
        "jet_axis": "jet pt, eta, phi, energy from the jet's own branches, else the four-momentum sum of all its particles",
        "feature_set": {"name": features.name, "max_particles": features.max_particles, "features": entries},
    }
