"""Supervised jet classification as a LightningModule.

The module receives its network from outside (any `nn.Module` taking `(x, v, mask)`, a
`JetBatch`'s `inputs`, and returning logits) and an optimizer / scheduler factory (Hydra `_partial_` objects). Validation and test
metrics (accuracy, AUC, background rejection) are computed on all predictions of the epoch at
once, never averaged over batches.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jettag.checkpoint import RunRecord
from jettag.data.batch import JetBatch
from jettag.errors import DataError
from jettag.evaluation.metrics import compute_metrics
from jettag.models.base import class_scores

log = logging.getLogger(__name__)

NO_WEIGHT_DECAY = ("cls_token",)


def decay_groups(named_parameters) -> list[dict]:
    """Trainable parameters in two optimizer groups: weight decay for the weight matrices, none for
    biases, normalization weights and the class token."""
    decay, no_decay = [], []
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or name.split(".")[-1] in NO_WEIGHT_DECAY else decay).append(param)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def with_scheduler(module: L.LightningModule, optimizer: torch.optim.Optimizer):
    """`configure_optimizers`' return value: the optimizer, with the task's per-step scheduler if any
    (`module.scheduler_factory`, a Hydra `_partial_` taking the optimizer and the total steps)."""
    if module.scheduler_factory is None:
        return optimizer
    scheduler = module.scheduler_factory(
        optimizer, total_steps=int(module.trainer.estimated_stepping_batches)
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class JetClassifier(L.LightningModule):
    # the metric its checkpoints and early stopping follow where the callbacks say `monitor: auto`
    monitor = ("val/auc", "max")

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable | None = None,
        class_names: Sequence[str] = (),
        background: int = 0,
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.class_names = list(class_names)
        self.background = background
        self.label_smoothing = label_smoothing
        self.run_config: dict | None = None  # the resolved run config, stored in checkpoints (RunRecord)
        self._outputs: dict[str, list] = {"val": [], "test": []}
        self.predictions: dict[str, np.ndarray] = {}  # "scores", "labels" of the last test, by jet index

    def forward(self, batch: JetBatch) -> torch.Tensor:
        return self.model(*batch.inputs)

    def training_step(self, batch: JetBatch, batch_idx: int) -> torch.Tensor:
        logits = self(batch)
        loss = F.cross_entropy(logits, batch.y, label_smoothing=self.label_smoothing)
        acc = (logits.argmax(-1) == batch.y).float().mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        self.log("train/acc", acc, prog_bar=True, batch_size=len(batch))
        return loss

    def _eval_step(self, batch: JetBatch, stage: str) -> None:
        logits = self(batch)
        loss = F.cross_entropy(logits, batch.y)
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val", batch_size=len(batch), sync_dist=True)
        scores = class_scores(logits)
        self._outputs[stage].append((batch.entry.cpu(), scores.detach().cpu(), batch.y.cpu()))

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def _collect(self, stage: str) -> tuple[np.ndarray, np.ndarray]:
        """Scores and labels of the epoch from every process, one per jet, in entry order (the split's order).

        Under DDP each process scored its share of the batches; they are gathered here so that the
        metrics are those of all predictions together, never an average over processes. Batches that
        the sampler repeated to give every process the same number are scored twice: the first score
        of each jet (entry) is kept.
        """
        outputs, self._outputs[stage] = self._outputs[stage], []
        num_classes = max(len(self.class_names), 1)
        index = torch.cat([o[0] for o in outputs]).numpy() if outputs else np.zeros(0, np.int64)
        scores = (
            torch.cat([o[1] for o in outputs]).numpy() if outputs else np.zeros((0, num_classes), np.float32)
        )
        labels = torch.cat([o[2] for o in outputs]).numpy() if outputs else np.zeros(0, np.int64)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, (index, scores, labels))
            index = np.concatenate([g[0] for g in gathered])
            scores = np.concatenate([g[1] for g in gathered])
            labels = np.concatenate([g[2] for g in gathered])
        index, first = np.unique(index, return_index=True)  # in entry order, the first score of each jet
        return scores[first], labels[first]

    def _log_metrics(self, stage: str, scores: np.ndarray, labels: np.ndarray) -> None:
        try:
            metrics = compute_metrics(labels, scores, self.class_names, self.background)
        except DataError as err:
            # e.g. a partial validation pass (sanity check, limit_val_batches) that misses a class
            log.warning("%s metrics not computed: %s", stage, err)
            metrics = {
                "accuracy": float((scores.argmax(1) == labels).mean()),
                "auc": math.nan,
                "rej50": math.nan,
            }
        for key, name in (("accuracy", "acc"), ("auc", "auc"), ("rej50", "rej50"), ("rej30", "rej30")):
            if key in metrics:
                # the same value on every process (computed on the gathered predictions)
                self.log(
                    f"{stage}/{name}",
                    float(metrics[key]),
                    prog_bar=stage == "val" and name in ("acc", "auc"),
                    sync_dist=True,
                )

    # Every process gathers and computes the same metrics (the checkpoint callback of each process
    # needs val/auc); only the first process writes files (see jettag.cli.train).
    def on_validation_epoch_end(self) -> None:
        scores, labels = self._collect("val")
        if len(labels):
            self._log_metrics("val", scores, labels)

    def on_test_epoch_end(self) -> None:
        scores, labels = self._collect("test")
        if len(labels):
            self.predictions = {"scores": scores, "labels": labels}
            self._log_metrics("test", scores, labels)

    def configure_optimizers(self):
        return with_scheduler(self, self.optimizer_factory(decay_groups(self.model.named_parameters())))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        RunRecord(self.run_config, self.class_names, self.background).write(checkpoint)
