"""jettag's checkpoint files: reading them, telling a jettag checkpoint (Lightning's file plus the
run record under `jettag`: the resolved run config, class names, background class) from other files,
and reading the run config and model tensors of earlier versions in today's terms (`as_written`,
`model_state`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch

from jettag.errors import ConfigError


def read_torch_file(path: str | Path, key: str = "ckpt_path"):
    """The content of a PyTorch file, or one sentence naming `key` and the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key}: the checkpoint '{path}' does not exist; check the path.")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ConfigError(
            f"{key}: cannot read the checkpoint '{path}' ({err}); is it a complete PyTorch file?"
        ) from None


def is_jettag_checkpoint(content) -> bool:
    return isinstance(content, Mapping) and "jettag" in content and "state_dict" in content


def load_checkpoint(path: str | Path) -> dict:
    checkpoint = read_torch_file(path)
    if not is_jettag_checkpoint(checkpoint):
        raise ConfigError(
            f"'{path}' is not a checkpoint written by jettag-train (it lacks the run configuration)."
        )
    return checkpoint


def as_written(config: Mapping) -> dict:
    """A stored run config in today's terms, with the settings its jettag version used where later
    versions changed a default:

    - ParticleNet before the published neighbour rule (configs without `neighbours`): only real particles
      were neighbours, and the first block's coordinates came from the four-vectors;
    - ParT's `head_layers` is `fc_params`, the name every model gives its hidden FC layers.
    """
    config = dict(config)
    model = dict(config.get("model") or {})
    if str(model.get("_target_", "")).endswith("ParticleNet") and "neighbours" not in model:
        config["model"] = model = {**model, "neighbours": "real", "points": None}
    if "head_layers" in model:
        model["fc_params"] = model.pop("head_layers")
        config["model"] = model
    return config


# ParT's MLP head before its hidden layers became `fc` (issue 14): head.<k>.0.* per hidden layer k, head.<K>.*
_OLD_HEAD = re.compile(r"head\.(\d+)\.(.+)")


def model_state(checkpoint: Mapping) -> dict[str, torch.Tensor]:
    """The model's tensors of a jettag checkpoint (`model.*` of Lightning's state dict, the prefix removed),
    named as today's models name them: ParT's `head.<k>.0.*` (hidden layer k) and `head.<K>.*` (the final
    Linear) of earlier versions are `fc.<3 k>.*` and `head.*`."""
    prefix = "model."
    state = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    old = [match for match in map(_OLD_HEAD.fullmatch, state) if match]
    if not old:
        return state
    last = max(int(match[1]) for match in old)
    renamed = {}
    for key, tensor in state.items():
        match = _OLD_HEAD.fullmatch(key)
        if match is None:
            renamed[key] = tensor
        elif int(match[1]) == last:
            renamed[f"head.{match[2]}"] = tensor
        else:  # (Linear, activation, Dropout) of a hidden layer: its Linear is item 3 k of `fc`
            renamed[f"fc.{3 * int(match[1])}.{match[2].removeprefix('0.')}"] = tensor
    return renamed
