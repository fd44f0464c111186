"""Reading weaver-core files: the state dict, its wrapper prefixes, which model it holds, its head size."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from jettag.errors import ConfigError

# Prefixes wrappers put in front of the model's own names: weaver's `mod`, DataParallel/DDP's
# `module`, torch.compile's `_orig_mod`.
WRAPPER_PREFIXES = ("mod.", "module.", "_orig_mod.")
# Buffers that are not weights: weaver's sequence trimmer counts warm-up steps (not saved by
# recent versions); BatchNorm's step counter only matters for momentum=None, absent in older files.
IGNORED_KEYS = ("trimmer._counter",)
OPTIONAL_SUFFIX = "num_batches_tracked"


def read_weaver_state_dict(
    source: str | Path | Mapping[str, torch.Tensor], key: str = "model.weights"
) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict with wrapper prefixes removed, a name for messages) from a path or a mapping.

    A file may hold the state dict itself (as weaver saves it) or a dict with it under
    `state_dict` or `model`. `key` names the setting that gave the file, for messages.
    """
    if isinstance(source, Mapping):
        state, name = source, "the given state dict"
    else:
        path = Path(source)
        name = f"'{path}'"
        if not path.is_file():
            raise ConfigError(f"{key}: the weights file {name} does not exist; check the path.")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ConfigError(
                f"{key}: cannot read the weights file {name} ({err}); is it a PyTorch state dict?"
            ) from None
    if isinstance(state, Mapping):
        for inner in ("state_dict", "model"):
            if isinstance(state.get(inner), Mapping):
                state = state[inner]
                break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{name} is not a state dict of tensors (as weaver-core saves a model).")
    return {strip_prefixes(k): v for k, v in state.items()}, name


def strip_prefixes(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    return key


def weaver_model_kind(state: Mapping[str, torch.Tensor]) -> str | None:
    """ "ParticleTransformer", "ParticleNet" or None, from the names of a (prefix-free) weaver state dict."""
    if any(k.startswith("edge_convs.") for k in state):
        return "ParticleNet"
    if "cls_token" in state or any(k.startswith(("blocks.", "cls_blocks.")) for k in state):
        return "ParticleTransformer"
    return None


def weaver_num_classes(state: Mapping[str, torch.Tensor]) -> int | None:
    """Outputs of the last Linear of weaver's `fc` head (ParT and ParticleNet alike), or None without one."""
    heads = [k for k in state if k.startswith("fc.") and k.endswith(".weight")]
    if not heads:
        return None
    last = max(heads, key=lambda k: int(k.split(".")[1]))
    return state[last].shape[0]


def layer_indices(state: Mapping[str, torch.Tensor], prefix: str) -> list[int]:
    """The sorted indices i of the keys `<prefix>.<i>.*`."""
    found = {int(k[len(prefix) + 1 :].split(".")[0]) for k in state if k.startswith(prefix + ".")}
    return sorted(found)
