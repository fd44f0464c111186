"""The published JetClass inputs, written out by hand from jet-universe/particle_transformer's
data/JetClass/JetClass_{kin,kinpid,full}.yaml, and computed from a file's branches as those data
configs define them: the independent side of the tests that check jettag against the published
models' inputs (never built from jettag's own feature code or configs).
"""

from __future__ import annotations

import awkward as ak
import numpy as np
import uproot

# (name, subtract_by, multiply_by, clip_min, clip_max); None = no transformation
KIN = [
    ("part_pt_log", 1.7, 0.7, -5, 5),
    ("part_e_log", 2.0, 0.7, -5, 5),
    ("part_logptrel", -4.7, 0.7, -5, 5),
    ("part_logerel", -4.7, 0.7, -5, 5),
    ("part_deltaR", 0.2, 4.0, -5, 5),
    ("part_deta", None, None, None, None),
    ("part_dphi", None, None, None, None),
]
KINPID = [
    ("part_pt_log", 1.7, 0.7, -5, 5),
    ("part_e_log", 2.0, 0.7, -5, 5),
    ("part_logptrel", -4.7, 0.7, -5, 5),
    ("part_logerel", -4.7, 0.7, -5, 5),
    ("part_deltaR", 0.2, 4.0, -5, 5),
    ("part_charge", None, None, None, None),
    ("part_isChargedHadron", None, None, None, None),
    ("part_isNeutralHadron", None, None, None, None),
    ("part_isPhoton", None, None, None, None),
    ("part_isElectron", None, None, None, None),
    ("part_isMuon", None, None, None, None),
    ("part_deta", None, None, None, None),
    ("part_dphi", None, None, None, None),
]
FULL = [
    ("part_pt_log", 1.7, 0.7, -5, 5),
    ("part_e_log", 2.0, 0.7, -5, 5),
    ("part_logptrel", -4.7, 0.7, -5, 5),
    ("part_logerel", -4.7, 0.7, -5, 5),
    ("part_deltaR", 0.2, 4.0, -5, 5),
    ("part_charge", None, None, None, None),
    ("part_isChargedHadron", None, None, None, None),
    ("part_isNeutralHadron", None, None, None, None),
    ("part_isPhoton", None, None, None, None),
    ("part_isElectron", None, None, None, None),
    ("part_isMuon", None, None, None, None),
    ("part_d0", None, None, None, None),
    ("part_d0err", 0, 1, 0, 1),
    ("part_dz", None, None, None, None),
    ("part_dzerr", 0, 1, 0, 1),
    ("part_deta", None, None, None, None),
    ("part_dphi", None, None, None, None),
]
PUBLISHED = {"kin": KIN, "kinpid": KINPID, "full": FULL}
LENGTH = 128


# weaver-core's arguments of the published models (particle_transformer's networks/example_ParticleTransformer.py
# and networks/example_ParticleNet.py)
PART_KWARGS = dict(
    pair_input_dim=4,
    use_pre_activation_pair=False,
    embed_dims=[128, 512, 128],
    pair_embed_dims=[64, 64, 64],
    num_heads=8,
    num_layers=8,
    num_cls_layers=2,
    block_params=None,
    cls_block_params={"dropout": 0, "attn_dropout": 0, "activation_dropout": 0},
    fc_params=[],
    activation="gelu",
)
PARTICLENET_KWARGS = dict(
    conv_params=[(16, (64, 64, 64)), (16, (128, 128, 128)), (16, (256, 256, 256))],
    fc_params=[(256, 0.1)],
    use_fusion=False,
    use_fts_bn=True,
    use_counts=True,
)
JETCLASS_LABELS = ["label_QCD", "label_Hbb", "label_Hcc", "label_Hgg", "label_H4q",
                   "label_Hqql", "label_Zqq", "label_Wqq", "label_Tbqq", "label_Tbl"]  # fmt: skip


def published_values(arrays: ak.Array, column: str) -> ak.Array:
    """One input variable as the data configs define it, from the file's branches."""
    pt = np.hypot(arrays.part_px, arrays.part_py)
    formulas = {
        "part_pt_log": lambda: np.log(pt),
        "part_e_log": lambda: np.log(arrays.part_energy),
        "part_logptrel": lambda: np.log(pt / arrays.jet_pt),
        "part_logerel": lambda: np.log(arrays.part_energy / arrays.jet_energy),
        "part_deltaR": lambda: np.hypot(arrays.part_deta, arrays.part_dphi),
        "part_d0": lambda: np.tanh(arrays.part_d0val),
        "part_dz": lambda: np.tanh(arrays.part_dzval),
    }
    return formulas[column]() if column in formulas else arrays[column]


def read_pt_ordered(path: str, entry_stop: int | None = None) -> ak.Array:
    """A file's branches with each jet's particles in decreasing pT (the JetClass convention; stored
    momenta rounded to fewer bits can swap near-equal neighbours)."""
    arrays = uproot.open(path)["tree"].arrays(entry_stop=entry_stop)
    order = ak.argsort(np.hypot(arrays.part_px, arrays.part_py), ascending=False, stable=True)
    return ak.zip(
        {f: arrays[f][order] if f.startswith("part_") else arrays[f] for f in arrays.fields}, depth_limit=1
    )


def pad(values: ak.Array, length: int, wrap: bool = False) -> np.ndarray:
    """(jets, length) float64: truncated to `length`, padded with zeros or, as weaver-core's
    `pad_mode: wrap`, with the jet's particles repeated."""
    counts = ak.to_numpy(ak.num(values))
    flat = ak.to_numpy(ak.flatten(values)).astype(np.float64)
    starts = np.cumsum(counts) - counts
    slots = np.arange(length)[None, :]
    real = slots < counts[:, None]
    if wrap:
        source = np.where(counts[:, None] > 0, slots % np.maximum(counts, 1)[:, None], 0)
    else:
        source = np.where(real, slots, 0)
    out = (
        flat[np.minimum(starts[:, None] + source, max(len(flat) - 1, 0))]
        if len(flat)
        else np.zeros(real.shape)
    )
    return out if wrap else np.where(real, out, 0.0)


def published_inputs(
    arrays: ak.Array, name: str, length: int = 128, wrap: bool = True
) -> dict[str, np.ndarray]:
    """weaver-core's inputs for the feature set `name`, channels-first as its models take them:
    points (B, 2, P) = (part_deta, part_dphi), features (B, C, P), lorentz_vectors (B, 4, P), mask (B, 1, P)."""
    counts = np.minimum(ak.to_numpy(ak.num(arrays.part_px)), length)
    mask = (np.arange(length)[None, :] < counts[:, None]).astype(np.float32)
    columns = []
    for column, center, scale, lo, hi in PUBLISHED[name]:
        values = published_values(arrays, column)
        if center is not None:  # standardized, then padded (weaver's pad_value 0 is a standardized value)
            values = np.minimum(np.maximum((values - center) * scale, lo), hi)
        columns.append(pad(values, length, wrap))
    vectors = [pad(arrays[b], length, wrap) for b in ("part_px", "part_py", "part_pz", "part_energy")]
    points = [pad(arrays[b], length, wrap) for b in ("part_deta", "part_dphi")]
    return {
        "points": np.stack(points, 1).astype(np.float32),
        "features": np.stack(columns, 1).astype(np.float32),
        "lorentz_vectors": np.stack(vectors, 1).astype(np.float32),
        "mask": mask[:, None, :],
    }


def randomize(model, calibrate, seed: int = 0, spread: float = 0.3):
    """Every weight and batch-norm statistic of a (weaver) model made random but sensible: running
    statistics from one train-mode pass `calibrate(model)` over real jets, then every tensor perturbed."""
    import torch

    torch.manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # running statistics = those of this one batch
    model.train()
    with torch.no_grad():
        calibrate(model)
    g = torch.Generator().manual_seed(seed + 1)
    scale_like = ("norm", "bn", "c_attn", "w_resid")
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.dim() == 1 and any(s in name for s in scale_like):
                p.copy_(1 + 0.2 * noise if name.endswith(("weight", "c_attn", "w_resid")) else 0.2 * noise)
            elif name.endswith("bias"):
                p.copy_(0.05 * noise)
            else:
                p.add_(spread * p.std() * noise)
        for bn in bns:
            bn.momentum = 0.1
            bn.running_var.mul_(torch.empty(bn.running_var.shape).uniform_(0.5, 2.0, generator=g))
            bn.running_mean.add_(0.1 * torch.randn(bn.running_mean.shape, generator=g))
    return model.eval()
