"""Resuming a run in the middle of an epoch on the batches it had not seen yet.

Lightning restores the model, the optimizer, the scheduler and its step counters from a mid-epoch
checkpoint and then runs the rest of the epoch, but it draws those batches from a fresh iterator, that
is, the epoch's first batches again. `ResumeBatchPosition` stores how many training batches of the
epoch were done in the checkpoint and makes `JetBatchSampler` skip them on restart, so a resumed run
sees the same batches in the same order as an uninterrupted one and ends with the same step count.

A streamed epoch has no sampler: each batch names the loader worker that made it, the callback counts
them, and on restart every worker makes its batches again and hands out only those not yet trained
on (`JetStream.skip`). The streamed loader's epoch is set from the trainer's, so a run resumed in
epoch 3 reads epoch 3's order of pieces.

Lightning does not save the random state. The callback stores torch's (CPU and CUDA), numpy's and
Python's in the checkpoint and sets them again just before the first training batch after the
restart, so dropout, augmentations and masks draw what they would have drawn: a resumed run ends with
the same weights, optimizer state and metrics as an uninterrupted one (bit for bit on a CPU with the
same threads). The data loaders draw from their own generators (`JetDataModule`), so making an
iterator does not move the global state.

On SIGTERM (a job being cancelled, a spot instance reclaimed) Lightning stops after the current batch;
`ResumeBatchPosition` then writes last.ckpt at that point, so nothing trained is lost.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


def is_streamed(loader) -> bool:
    """Whether the trainer's training loader is jettag's streamed one (`JetStreamLoader`)."""
    from jettag.data.streaming.stream import JetStreamLoader

    return isinstance(loader, JetStreamLoader)


class ResumeBatchPosition(L.Callback):
    def __init__(self):
        self.epoch = 0
        self.batches = 0  # training batches of `epoch` done (this process's share under DDP)
        self.workers: Counter = Counter()  # streaming: of those, the batches of each loader worker
        self._restored: dict | None = None
        self._random_state: dict | None = None  # set again before the first batch after a restart

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # runs before ModelCheckpoint's on_train_batch_end (Lightning calls checkpoint callbacks last)
        if trainer.current_epoch != self.epoch:
            self.workers = Counter()
        self.epoch, self.batches = trainer.current_epoch, batch_idx + 1
        worker = getattr(batch, "worker", None)
        if worker is not None:
            self.workers[worker] += 1

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epoch, self.batches, self.workers = trainer.current_epoch + 1, 0, Counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        loader = trainer.train_dataloader
        if is_streamed(loader):  # the trainer's epoch
            loader.epoch = trainer.current_epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        state, self._random_state = self._random_state, None
        if state is not None:
            set_random_state(state)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        checkpoint = trainer.checkpoint_callback
        if isinstance(exception, SIGTERMException) and getattr(checkpoint, "dirpath", None):
            path = Path(checkpoint.dirpath) / "last.ckpt"
            trainer.save_checkpoint(path)
            log.info(
                "SIGTERM: saved %s at step %d; ckpt_path=last resumes from it", path, trainer.global_step
            )

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batches": self.batches, "workers": dict(self.workers),
                "random_state": random_state()}  # fmt: skip

    def load_state_dict(self, state_dict: dict) -> None:
        self._restored = dict(state_dict)
        self._random_state = state_dict.get("random_state")

    def on_train_start(self, trainer, pl_module) -> None:
        restored, self._restored = self._restored, None
        loader = trainer.train_dataloader
        if is_streamed(loader):
            # the first iterator was made (and its first batch read) before this hook: make it again,
            # with the trainer's epoch and, mid-epoch, the batches each worker already handed out
            loader.epoch = trainer.current_epoch
            stream = loader.dataset
            resumed = bool(restored and restored["batches"] and restored["epoch"] == trainer.current_epoch)
            stream.skip = {int(w): n for w, n in restored.get("workers", {}).items()} if resumed else {}
            stream.skip_epoch = trainer.current_epoch if resumed else None
            if restored:
                iter(trainer.fit_loop._data_fetcher)
            if resumed:
                self.epoch, self.batches = restored["epoch"], restored["batches"]
                self.workers = Counter(stream.skip)
                log.info(
                    "resuming epoch %d after its first %d batches", trainer.current_epoch, restored["batches"]
                )
            return
        if not restored or not restored["batches"] or restored["epoch"] != trainer.current_epoch:
            return
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


def random_state() -> dict:
    """The global random states a training step draws from: torch (CPU and every CUDA device), numpy, Python.

    In types that `torch.load(weights_only=True)` (Lightning's way of reading checkpoints) accepts."""
    # numpy's legacy global state: what code that does not pass a Generator draws from
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [
            str(name),
            torch.from_numpy(keys.astype(np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
