"""The resident memory a run reports: read as the kernel counts it, after every epoch."""

import mmap
import sys

import lightning as L
import numpy as np
import pytest
from lightning.pytorch.demos.boring_classes import BoringModel

from jettag.data.memory import give_back_freed_memory
from jettag.tasks.memory import ResidentMemory, peak_resident_mb, resident_mb

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="/proc is Linux's")


def kernel_mb(field: str) -> float:
    """VmRSS / VmHWM of this process from /proc/self/status, MiB."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(field)


def test_resident_memory_is_the_kernels_and_follows_an_allocation():
    assert resident_mb() == pytest.approx(kernel_mb("VmRSS"), abs=2)
    before = resident_mb()
    block = mmap.mmap(-1, 64 * 2**20)  # 64 MiB of fresh pages (malloc may reuse pages already resident)
    np.frombuffer(block, dtype=np.uint8)[::4096] = 1  # every page written
    assert resident_mb() - before == pytest.approx(64, abs=4)
    assert peak_resident_mb() == pytest.approx(kernel_mb("VmHWM"), abs=2)
    assert peak_resident_mb() >= resident_mb() - 1
    block.close()
    assert give_back_freed_memory()  # glibc here


def test_the_callback_reports_every_epoch():
    callback = ResidentMemory()
    trainer = L.Trainer(max_epochs=3, limit_train_batches=2, limit_val_batches=0, callbacks=[callback],
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)  # fmt: skip
    trainer.fit(BoringModel())
    assert len(callback.per_epoch) == 3
    assert all(abs(mb - kernel_mb("VmRSS")) < 200 for mb in callback.per_epoch)
    summary = callback.summary()
    assert summary["resident_mb_per_epoch"] == callback.per_epoch
    assert summary["peak_resident_mb"] >= max(callback.per_epoch) - 1
