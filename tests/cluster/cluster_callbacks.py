"""Callbacks the tests add to jettag-train runs (`+callbacks.NAME._target_=cluster_callbacks.CLASS`)."""

from __future__ import annotations

import json
import os
import signal as signal_module
import time

import lightning as L


class RecordBatches(L.Callback):
    """Appends one JSON line per optimizer step to `path`: the step, the epoch, the jet indices of the batch."""

    def __init__(self, path: str):
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        with open(self.path, "a") as f:
            step = {
                "step": trainer.global_step,
                "epoch": trainer.current_epoch,
                "jets": batch.entry.tolist(),
            }
            f.write(json.dumps(step) + "\n")


class KillAtStep(L.Callback):
    """Sends `signal` (SIGKILL: no clean-up, like a node failure) to its own process when optimizer step
    `step` + 1 is about to start."""

    def __init__(self, step: int, signal: str = "SIGKILL"):
        self.step = step
        self.signal = getattr(signal_module, signal)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signal)


class Slow(L.Callback):
    """Makes every training step take `seconds` longer, so that a signal can arrive in the middle of a run."""

    def __init__(self, seconds: float = 0.5):
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(self.seconds)
