"""jettag's checkpoint files and the run record they carry.

A jettag checkpoint is Lightning's file plus, under the key `jettag`, the run record (`RunRecord`): the
resolved run configuration (with the feature set as fitted on the training data), the class names, the
background class, and what a task adds (a pretraining objective). It is written here (`RunRecord.write`,
called by the tasks' `on_save_checkpoint`) and read here (`RunRecord.read`), by evaluation, prediction,
export and fine-tuning alike. `as_written` and `model_state` read the run config and the model tensors of
earlier jettag versions in today's terms.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from jettag.errors import ConfigError


def read_torch_file(path: str | Path, key: str = "ckpt_path"):
    """The content of a PyTorch file, or one sentence naming `key` and the file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(
            f"{key}: '{path}' is a directory; give the checkpoint file, e.g. {path}/checkpoints/best.ckpt."
        )
    if not path.is_file():
        raise ConfigError(f"{key}: the checkpoint '{path}' does not exist; check the path.")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(
            f"{key}: '{path}' is not a readable PyTorch checkpoint ({type(err).__name__}: {reason}); "
            "give a checkpoint written by jettag-train or a published model file, complete."
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


@dataclass
class RunRecord:
    """What a checkpoint says about its run (see the module docstring)."""

    config: dict | None  # the resolved run config; None in files made by hand (tests)
    class_names: list[str] = field(default_factory=list)
    background: int = 0
    extra: dict = field(default_factory=dict)  # e.g. {"objective": ..., "targets": [...]} of pretraining

    KEY = "jettag"

    def write(self, checkpoint: dict) -> None:
        """Into a checkpoint Lightning is saving (`on_save_checkpoint`)."""
        checkpoint[self.KEY] = {
            "config": self.config,
            "class_names": list(self.class_names),
            "background": self.background,
            **self.extra,
        }

    @classmethod
    def read(cls, checkpoint: Mapping) -> RunRecord:
        """The record of a jettag checkpoint's content, its config as its jettag version meant it."""
        meta = dict(checkpoint.get(cls.KEY) or {})
        config = meta.pop("config", None)
        return cls(
            config=as_written(config) if isinstance(config, Mapping) else None,
            class_names=list(meta.pop("class_names", None) or []),
            background=int(meta.pop("background", 0) or 0),
            extra=meta,
        )

    def section(self, name: str) -> dict:
        """One group of the run config (`model`, `features`, `data`, ...), {} when absent."""
        value = (self.config or {}).get(name)
        return dict(value) if isinstance(value, Mapping) else {}


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


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written whole or not at all: to a temporary file next to the target, flushed to the
    disk, then renamed over it (a rename within a directory is atomic on POSIX file systems).

    A job killed while writing (SIGKILL, a node failing, a full disk) leaves the previous checkpoint
    as it was, loadable, and a `.NAME.partial` file that the next write replaces. Lightning's own
    writer goes through an fsspec transaction that writes to the system's temporary directory and then
    moves the file, which is a copy over the old checkpoint when the run directory is on another file
    system (a cluster's shared disk, /tmp local to the node). Remote paths (`s3://...`) keep Lightning's.
    """

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        target = str(path)
        if "://" in target:
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options for a local path ({target}).")
        directory, name = os.path.split(os.path.abspath(target))
        os.makedirs(directory, exist_ok=True)
        partial = os.path.join(directory, f".{name}.partial")
        with open(partial, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, target)
        try:  # the rename itself on the disk
            fd = os.open(directory, os.O_RDONLY)
        except OSError:
            return None
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)
        return None
