"""weaver-core ParticleTransformer names <-> jettag ParticleTransformer names, and the model a file holds.

    weaver                            jettag
    embed.input_bn.*                  embed.input_bn.*
    embed.embed.<k>.*                 embed.mlp.<k>.*          (LayerNorm, Linear, GELU per width)
    pair_embed.embed.<k>.*            pair_embed.mlp.<k>.*     (1x1 Conv1d weight (out, in, 1) -> Linear (out, in))
    blocks.<i>.c_attn                 blocks.<i>.head_scale
    blocks.<i>.w_resid                blocks.<i>.resid_scale
    blocks.<i>.<other>                blocks.<i>.<other>       (same for cls_blocks)
    cls_token, norm.*                 cls_token, norm.*
    fc.<k>.0.*                        fc.<3 k>.*               (hidden layer k of fc_params: Linear, act., Dropout)
    fc.<K>.*                          head.*                   (K hidden layers; fc.0.* with fc_params=[])

weaver versions that used `nn.MultiheadAttention` saved the packed projection as
`attn.in_proj_weight` / `attn.in_proj_bias` instead of `attn.in_proj.weight` / `.bias`; both load.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from jettag.models.part import ParticleTransformer
from jettag.models.weaver.state import layer_indices

# weaver-core ParticleTransformer arguments of the published models (particle_transformer's
# networks/example_ParticleTransformer.py); jettag's ParticleTransformer defaults are this model.
REFERENCE_WEAVER_KWARGS = dict(
    pair_input_dim=4,
    use_pre_activation_pair=False,
    embed_dims=[128, 512, 128],
    pair_embed_dims=[64, 64, 64],
    num_heads=8,
    num_layers=8,
    num_cls_layers=2,
    cls_block_params={"dropout": 0, "attn_dropout": 0, "activation_dropout": 0},
    fc_params=[],
)
BLOCK_RENAMES = {"head_scale": "c_attn", "resid_scale": "w_resid"}
MODEL = "ParticleTransformer"


def weaver_names(key: str, num_fc: int) -> list[str]:
    """The weaver names (new and old naming) of one jettag state-dict key (`num_fc` hidden FC layers)."""
    parts = key.split(".")
    top = parts[0]
    if top == "embed" and parts[1] == "mlp":
        return [".".join(["embed", "embed", *parts[2:]])]
    if top == "pair_embed" and parts[1] == "mlp":
        return [".".join(["pair_embed", "embed", *parts[2:]])]
    if top in ("blocks", "cls_blocks"):
        head, rest = parts[:2], parts[2:]
        if rest[0] in BLOCK_RENAMES:
            return [".".join([*head, BLOCK_RENAMES[rest[0]]])]
        if rest[:2] == ["attn", "in_proj"]:
            return [
                ".".join([*head, "attn", "in_proj", rest[2]]),
                ".".join([*head, "attn", f"in_proj_{rest[2]}"]),
            ]
        return [key]
    if top == "fc":
        return [".".join(["fc", str(int(parts[1]) // 3), "0", *parts[2:]])]
    if top == "head":  # the last item of weaver's fc
        return [".".join(["fc", str(num_fc), *parts[1:]])]
    return [key]  # embed.input_bn.*, cls_token, norm.*


def weaver_key_map(model: ParticleTransformer, keep_head: bool = True) -> dict[str, str]:
    """{weaver key: jettag key} for every tensor of `model`'s state dict (both attention namings)."""
    mapping = {}
    num_fc = sum(isinstance(m, torch.nn.Linear) for m in model.fc)
    for key in model.state_dict():
        if key.startswith("head.") and not keep_head:
            continue
        for name in weaver_names(key, num_fc):
            mapping[name] = key
    return mapping


def model_config(state: Mapping[str, torch.Tensor]) -> dict:
    """The jettag model config of the ParticleTransformer a (prefix-free) weaver state dict holds.

    Read from the tensor shapes: input size, widths, depths, heads (the pair embedding's last width),
    the hidden FC layers (`fc_params`, ReLU). What shapes cannot tell takes the published models' value:
    the pair embedding's last GELU (`use_pre_activation_pair=False`), and 8 heads without a pair embedding.
    Dropout rates do not matter for scoring.
    """
    embed = [state[f"embed.embed.{i}.weight"].shape[0] for i in layer_indices(state, "embed.embed")
             if state[f"embed.embed.{i}.weight"].dim() == 2]  # fmt: skip
    pair = [state[f"pair_embed.embed.{i}.weight"].shape[0] for i in layer_indices(state, "pair_embed.embed")
            if state[f"pair_embed.embed.{i}.weight"].dim() == 3]  # fmt: skip
    dim = embed[-1] if embed else state["cls_token"].shape[-1]
    fc = layer_indices(state, "fc")
    fc_params = [[state[f"fc.{i}.0.weight"].shape[0], 0.0] for i in fc[:-1]]
    return {
        "_target_": "jettag.models.ParticleTransformer",
        "embed_dims": embed,
        "pair_embed_dims": pair[:-1],
        "num_heads": pair[-1] if pair else 8,
        "num_layers": len(layer_indices(state, "blocks")),
        "num_cls_layers": len(layer_indices(state, "cls_blocks")),
        "ffn_ratio": state["blocks.0.fc1.weight"].shape[0] // dim if "blocks.0.fc1.weight" in state else 4,
        "use_interaction": bool(pair),
        "pair_final_activation": True,
        "fc_params": fc_params,
    }
