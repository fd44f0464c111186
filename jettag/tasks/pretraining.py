"""What the pretraining tasks share: the features they recompute, the optimizer, the checkpoint.

A pretraining task (`ContrastivePretrainer`, `MaskedParticlePretrainer`) trains a model's backbone
with an objective of its own; its checkpoint holds the whole model (`model.*`) and the run record,
so that `task=finetune task.backbone=<run>/checkpoints/best.ckpt` starts from it. The tasks change
jets inside the training step (augmented views, visible particles only) and recompute the input
features of the changed jets (`jettag.features.recompute`) with the run's fitted feature set,
which `jettag-train` passes as `features`. Validation uses the same random draws in every epoch
(`eval_generator`), so that `val/loss` is comparable from epoch to epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lightning as L
import torch
from torch import nn

from jettag.checkpoint import RunRecord
from jettag.errors import ConfigError
from jettag.features.recompute import FeatureRecomputer
from jettag.features.sets import FeatureSet
from jettag.models.base import JetTagger
from jettag.tasks.classification import decay_groups, with_scheduler


def eval_generator(batch_idx: int) -> torch.Generator:
    """The random draws of validation batch `batch_idx`: the same in every epoch."""
    return torch.Generator().manual_seed(1000 + batch_idx)


class PretrainingTask(L.LightningModule):
    """Base of the pretraining tasks (see the module docstring)."""

    objective = "pretraining"
    # the metric its checkpoints and early stopping follow where the callbacks say `monitor: auto`
    monitor = ("val/loss", "min")

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable | None = None,
        features: FeatureSet | None = None,
        class_names: Sequence[str] = (),
        background: int = 0,
    ):
        super().__init__()
        if not isinstance(model, JetTagger):
            raise ConfigError(f"pretraining needs one of jettag's models, not {type(model).__name__}.")
        if features is None:
            raise ConfigError(
                "pretraining needs the run's feature set (jettag-train passes it); build the task with "
                "features=JetDataModule.features."
            )
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.recompute = FeatureRecomputer(features)
        self.class_names = list(class_names)  # kept in the checkpoint
        self.background = background
        self.run_config: dict | None = None

    def trained_parameters(self):
        """Every parameter but the model's classifier head (a fine-tuning run replaces it)."""
        return ((n, p) for n, p in self.named_parameters() if not n.startswith("model.head."))

    def configure_optimizers(self):
        return with_scheduler(self, self.optimizer_factory(decay_groups(self.trained_parameters())))

    def record_extra(self) -> dict:
        return {"objective": self.objective}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        RunRecord(self.run_config, self.class_names, self.background, self.record_extra()).write(checkpoint)
