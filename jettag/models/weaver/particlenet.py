"""weaver-core ParticleNet names <-> jettag ParticleNet names, and the model a file holds.

The published ParticleNet_{kin,kinpid,full}.pt (jet-universe/particle_transformer) hold 81 tensors:

    weaver                               jettag
    bn_fts.*                             input_norm.*
    edge_convs.<b>.convs.<l>.weight      blocks.<b>.linears.<l>.weight   (1x1 Conv2d (o, i, 1, 1) -> Linear (o, i))
    edge_convs.<b>.bns.<l>.*             blocks.<b>.norms.<l>.*          (BatchNorm2d -> BatchNorm1d, same tensors)
    edge_convs.<b>.sc.weight             blocks.<b>.shortcut.weight      (1x1 Conv1d (o, i, 1) -> Linear (o, i))
    edge_convs.<b>.sc_bn.*               blocks.<b>.shortcut_norm.*
    fusion_block.0.weight, .1.*          fusion.weight, fusion_norm.*    (use_fusion=True only)
    fc.<i>.0.*                           fc.<3 i>.*                      (Linear, ReLU, Dropout per fc_params entry)
    fc.<K>.*                             head.*

k (neighbours per block) is not stored in a file: the published models use 16 in every block.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from jettag.models.particlenet import ParticleNet
from jettag.models.weaver.state import layer_indices

MODEL = "ParticleNet"
PUBLISHED_K = 16


def weaver_name(key: str, num_fc: int) -> str:
    """The weaver name of one jettag ParticleNet state-dict key (`num_fc` hidden FC layers)."""
    parts = key.split(".")
    top, rest = parts[0], parts[1:]
    if top == "input_norm":
        return ".".join(["bn_fts", *rest])
    if top == "blocks":
        block, module, *tail = rest
        if module in ("linears", "norms"):
            return ".".join(["edge_convs", block, "convs" if module == "linears" else "bns", *tail])
        return ".".join(["edge_convs", block, "sc" if module == "shortcut" else "sc_bn", *tail])
    if top == "fusion":
        return ".".join(["fusion_block", "0", *rest])
    if top == "fusion_norm":
        return ".".join(["fusion_block", "1", *rest])
    if top == "fc":
        return ".".join(["fc", str(int(rest[0]) // 3), "0", *rest[1:]])
    if top == "head":
        return ".".join(["fc", str(num_fc), *rest])
    return key


def weaver_key_map(model: ParticleNet, keep_head: bool = True) -> dict[str, str]:
    """{weaver key: jettag key} for every tensor of `model`'s state dict."""
    num_fc = sum(isinstance(m, torch.nn.Linear) for m in model.fc)
    return {
        weaver_name(key, num_fc): key
        for key in model.state_dict()
        if keep_head or not key.startswith("head.")
    }


def model_config(state: Mapping[str, torch.Tensor]) -> dict:
    """The jettag model config of the ParticleNet a (prefix-free) weaver state dict holds: widths from the
    tensor shapes, k = 16 as published (a file does not store it), the reference neighbour rule."""
    conv_params = []
    for b in layer_indices(state, "edge_convs"):
        widths = [state[f"edge_convs.{b}.convs.{i}.weight"].shape[0]
                  for i in layer_indices(state, f"edge_convs.{b}.convs")]  # fmt: skip
        conv_params.append([PUBLISHED_K, widths])
    fc = layer_indices(state, "fc")
    return {
        "_target_": "jettag.models.ParticleNet",
        "conv_params": conv_params,
        "fc_params": [[state[f"fc.{i}.0.weight"].shape[0], 0.1] for i in fc[:-1]],
        "use_fusion": "fusion_block.0.weight" in state,
        "neighbours": "reference",
        "points": ["part_deta", "part_dphi"],
    }
