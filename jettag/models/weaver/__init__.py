"""weaver-core files (e.g. the published ParT_* and ParticleNet_{kin,kinpid,full}.pt) in jettag's models.

weaver-core (https://github.com/hqucms/weaver-core) trains a model inside a wrapper module whose
attribute is `mod`, so its files name tensors `mod.embed.input_bn.weight`, `mod.edge_convs.0...`.
Every tensor is mapped explicitly onto jettag's ParticleTransformer (`part.py`, the table there) or
ParticleNet (`particlenet.py`); 1x1 convolution weights become Linear weights. A file of the other
model, or of another size, stops with one sentence naming the file and the first tensor that does
not fit.

What a state dict cannot tell, the jettag model must be built with: for ParT the pair embedding's
last GELU (weaver `use_pre_activation_pair=False`, as in the published models, is jettag's default
`pair_final_activation=True`) and the activations of hidden FC layers (`fc_params`, ReLU unless
given); for ParticleNet k (16 in the published models). `model_config` reads everything else from
the shapes, so a published file can be scored without a model config (`jettag.inference.load_trained`).

Input-level differences that do not affect the weights: weaver takes channels-first tensors
(x (B, C, N), v (B, 4, N), mask (B, 1, N), ParticleNet's points (B, 2, N)); jettag takes them
channels-last with a boolean mask, and ParticleNet finds its points among the feature columns.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from jettag.errors import ConfigError
from jettag.models.weaver import part, particlenet
from jettag.models.weaver.load import attach_weights, load_weaver_weights, weaver_key_map
from jettag.models.weaver.part import REFERENCE_WEAVER_KWARGS
from jettag.models.weaver.state import read_weaver_state_dict, weaver_model_kind, weaver_num_classes


def model_config(state: Mapping[str, torch.Tensor], name: str = "the state dict") -> dict:
    """The jettag model config (with `_target_`) of the model a prefix-free weaver state dict holds."""
    kind = weaver_model_kind(state)
    if kind == part.MODEL:
        return part.model_config(state)
    if kind == particlenet.MODEL:
        return particlenet.model_config(state)
    raise ConfigError(
        f"{name} is neither a weaver-core ParticleTransformer nor a ParticleNet (no 'cls_token' or "
        "'edge_convs' tensors); give a jettag checkpoint or a published ParT / ParticleNet file."
    )


__all__ = [
    "REFERENCE_WEAVER_KWARGS",
    "attach_weights",
    "load_weaver_weights",
    "model_config",
    "read_weaver_state_dict",
    "weaver_key_map",
    "weaver_model_kind",
    "weaver_num_classes",
]
