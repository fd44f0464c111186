"""Resuming a run in the middle of an epoch on the batches it had not seen yet.

Lightning restores the model, the optimizer, the scheduler and its step counters from a mid-epoch
checkpoint and then runs the rest of the epoch, but it draws those batches from a fresh iterator, that
is, the epoch's first batches again. `ResumeBatchPosition` stores how many training batches of the
epoch were done in the checkpoint and makes `JetBatchSampler` skip them on restart, so a resumed run
sees the same batches in the same order as an uninterrupted one and ends with the same step count.

On SIGTERM (a job being cancelled, a spot instance reclaimed) Lightning stops after the current batch;
`ResumeBatchPosition` then writes last.ckpt at that point, so nothing trained is lost.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class ResumeBatchPosition(L.Callback):
    def __init__(self):
        self.epoch = 0
        self.batches = 0  # training batches of `epoch` done (this process's share under DDP)
        self._restored: dict | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # runs before ModelCheckpoint's on_train_batch_end (Lightning calls checkpoint callbacks last)
        self.epoch, self.batches = trainer.current_epoch, batch_idx + 1

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epoch, self.batches = trainer.current_epoch + 1, 0

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        checkpoint = trainer.checkpoint_callback
        if isinstance(exception, SIGTERMException) and getattr(checkpoint, "dirpath", None):
            path = Path(checkpoint.dirpath) / "last.ckpt"
            trainer.save_checkpoint(path)
            log.info(
                "SIGTERM: saved %s at step %d; ckpt_path=last resumes from it", path, trainer.global_step
            )

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batches": self.batches}

    def load_state_dict(self, state_dict: dict) -> None:
        self._restored = dict(state_dict)

    def on_train_start(self, trainer, pl_module) -> None:
        restored, self._restored = self._restored, None
        if not restored or not restored["batches"] or restored["epoch"] != trainer.current_epoch:
            return
        loader = trainer.train_dataloader
        sampler = getattr(loader, "sampler", None)
        if not hasattr(sampler, "skip"):
            log.warning("resumed mid-epoch, but the training sampler cannot skip the batches already seen")
            return
        sampler.set_epoch(trainer.current_epoch)
        sampler.skip = restored["batches"]
        if getattr(loader, "num_workers", 0) > 0:
            # worker processes drew batch indices when the iterator was made: make it again
            iter(trainer.fit_loop._data_fetcher)
        log.info("resuming epoch %d after its first %d batches", trainer.current_epoch, restored["batches"])
