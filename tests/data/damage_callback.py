"""A callback the damaged-file test adds to a jettag-train run (`+callbacks.damage._target_=...`)."""

from __future__ import annotations

import shutil

from lightning.pytorch.callbacks import Callback


class ReplaceFileAfterFirstEpoch(Callback):
    """Overwrite the file `path` with the bytes of `replacement` when the first training epoch ends
    (after its checkpoint), as a disk or a copy going wrong under a running job would."""

    def __init__(self, path: str, replacement: str):
        self.path, self.replacement = path, replacement

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 0:
            shutil.copyfile(self.replacement, self.path)
