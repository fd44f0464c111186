"""Loading a weaver-core state dict into jettag's ParticleTransformer or ParticleNet."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from jettag.errors import ConfigError
from jettag.models.part import ParticleTransformer
from jettag.models.particlenet import ParticleNet
from jettag.models.weaver import part, particlenet
from jettag.models.weaver.state import (
    IGNORED_KEYS,
    OPTIONAL_SUFFIX,
    read_weaver_state_dict,
    weaver_model_kind,
    weaver_num_classes,
)

log = logging.getLogger(__name__)

# the jettag model class, and the module with its weaver names, per weaver model
FAMILIES = {part.MODEL: (ParticleTransformer, part), particlenet.MODEL: (ParticleNet, particlenet)}
CONFIG_NAMES = {part.MODEL: "part", particlenet.MODEL: "particlenet"}


def family_of(model: nn.Module, name: str):
    for kind, (cls, names) in FAMILIES.items():
        if isinstance(model, cls):
            return kind, names
    raise ConfigError(
        f"{name}: weaver-core weights load into the ParticleTransformer and ParticleNet, not "
        f"{type(model).__name__}; use model=part or model=particlenet (or a jettag checkpoint)."
    )


def weaver_key_map(model: nn.Module, keep_head: bool = True) -> dict[str, str]:
    """{weaver key: jettag key} for every tensor of `model`'s state dict."""
    return family_of(model, "weaver_key_map")[1].weaver_key_map(model, keep_head)


def model_num_classes(model: nn.Module) -> int:
    return model.head.out_features  # every jettag model's head is its final Linear


def file_head_keys(state: Mapping[str, torch.Tensor]) -> set[str]:
    """The classifier head's keys in a weaver file: the last layer of `fc` (its hidden layers, from
    `fc_params`, belong to the backbone, as in jettag)."""
    fc = [k for k in state if k.startswith("fc.")]
    if not fc:
        return set()
    last = max(int(k.split(".")[1]) for k in fc)
    return {k for k in fc if k.startswith(f"fc.{last}.")}


def _convert(tensor: torch.Tensor, expected: torch.Size) -> torch.Tensor:
    """1x1 convolution weights (out, in, 1[, 1]) as the Linear weights (out, in) jettag keeps."""
    if (
        tensor.shape != expected
        and tensor.dim() > len(expected)
        and all(s == 1 for s in tensor.shape[len(expected) :])
    ):
        return tensor.reshape(expected)
    return tensor


def load_weaver_weights(
    model: nn.Module,
    source: str | Path | Mapping[str, torch.Tensor],
    strict: bool = True,
    keep_head: bool | str = True,
    key: str = "model.weights",
) -> list[str]:
    """Load a weaver-core ParticleTransformer or ParticleNet state dict (a path or a mapping) into `model`.

    `keep_head=False` leaves the model's classifier head as it is (the file's `fc.*` head is skipped);
    `keep_head="auto"` keeps the file's head when its output size fits the model and otherwise
    logs that it is replaced by the model's own (freshly initialised) head. With `strict`, every
    tensor of the file must map onto the model and every tensor of the model must be in the file;
    otherwise a `ConfigError` names the file and the first tensor that does not fit. A file of the
    other model is named as such. Returns the jettag keys that were not loaded (always empty with `strict`).
    """
    state, name = read_weaver_state_dict(source, key)
    kind, names = family_of(model, name)
    found = weaver_model_kind(state)
    if found is not None and found != kind:
        raise ConfigError(
            f"{name} holds a weaver-core {found}, not a {kind}; use model={CONFIG_NAMES[found]} "
            "with the features it was trained on."
        )
    file_classes = weaver_num_classes(state)
    model_classes = model_num_classes(model)
    if keep_head == "auto":
        keep_head = file_classes == model_classes
        if not keep_head:
            log.info(
                "%s: the file's head has %s outputs and the model %d classes: the head is replaced by a new one",
                name,
                file_classes,
                model_classes,
            )
    elif keep_head and file_classes is not None and file_classes != model_classes:
        raise ConfigError(
            f"{name} classifies {file_classes} classes but the model {model_classes}; "
            "load it with keep_head=False (or 'auto') to replace the head."
        )
    skipped = set() if keep_head else file_head_keys(state)
    mapping = names.weaver_key_map(model, keep_head=bool(keep_head))
    target = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    for weaver_key, tensor in state.items():
        if weaver_key in IGNORED_KEYS or weaver_key in skipped:
            continue
        jettag_key = mapping.get(weaver_key)
        if jettag_key is None:
            if strict:
                raise ConfigError(
                    f"{name} does not fit this {kind}: its tensor '{weaver_key}' has no counterpart "
                    "(a different weaver configuration or model?)."
                )
            continue
        expected = target[jettag_key].shape
        tensor = _convert(tensor, expected)
        if tensor.shape != expected:
            raise ConfigError(
                f"{name} does not fit this {kind}: '{weaver_key}' has shape {tuple(tensor.shape)} where the "
                f"model needs {tuple(expected)} (check the features (input size), widths and heads)."
            )
        converted[jettag_key] = tensor
    inverse = {v: k for k, v in mapping.items()}
    missing = [k for k in target if k not in converted and (keep_head or k in mapping.values())]
    if strict:
        for jettag_key in missing:
            if not jettag_key.endswith(OPTIONAL_SUFFIX):
                raise ConfigError(
                    f"{name} does not fit this {kind}: it lacks '{inverse.get(jettag_key, jettag_key)}' "
                    "(a different weaver configuration or model?)."
                )
    model.load_state_dict(converted, strict=False)
    return [k for k in missing if not k.endswith(OPTIONAL_SUFFIX)]


def attach_weights(model: nn.Module, weights: str | Path) -> nn.Module:
    """`model.weights=...` of a run config: load the file into a ParticleTransformer or ParticleNet,
    fitting the head (a head of another size than the classes is replaced)."""
    load_weaver_weights(model, weights, keep_head="auto")
    log.info("loaded weaver-core %s weights from %s", type(model).__name__, weights)
    return model
