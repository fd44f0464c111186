"""jettag's checkpoint files: reading them, and telling a jettag checkpoint (Lightning's file plus the
run record under `jettag`: the resolved run config, class names, background class) from other files."""

from __future__ import annotations

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
