"""The resident memory of a run, epoch by epoch, in the log and in `metrics.json`.

A training run that grows from one epoch to the next runs out of memory hours in, on a laptop or in a
batch slot with a memory limit; `ResidentMemory` makes the growth visible from the first epochs. After
each training epoch it logs the process's resident set (`memory/rss_mb`, to the run's logger too) and
its peak so far (after giving the epoch's freed memory back to the system,
`jettag.data.memory.give_back_freed_memory`), and `jettag-train` writes both, per epoch, into the run information of
`metrics.json` (`resident_mb_per_epoch`, `peak_resident_mb`). The resident set is read from
`/proc/self/statm` (Linux); elsewhere only the peak (`getrusage`) is known.
"""

from __future__ import annotations

import logging
import os
import resource
import sys

import lightning as L

from jettag.data.memory import give_back_freed_memory

log = logging.getLogger(__name__)


def resident_mb() -> float | None:
    """This process's resident memory now, in MB (2^20 bytes); None where /proc is not available."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_resident_mb() -> float:
    """The peak resident memory of this process so far, in MB (`ru_maxrss`: kB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


class ResidentMemory(L.Callback):
    """Logs the resident memory after every training epoch (see the module docstring)."""

    def __init__(self):
        self.per_epoch: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        give_back_freed_memory()  # the epoch's freed tensors: back to the system before the next phase
        now, peak = resident_mb(), peak_resident_mb()
        if now is None:
            log.info("epoch %d: peak resident memory %.0f MB", trainer.current_epoch, peak)
            return
        self.per_epoch.append(round(now, 1))
        pl_module.log("memory/rss_mb", now, on_epoch=True, rank_zero_only=True)
        log.info("epoch %d: resident memory %.0f MB (peak %.0f MB)", trainer.current_epoch, now, peak)

    def summary(self) -> dict:
        """For metrics.json: the resident memory after each epoch and the peak, in MB."""
        return {
            "resident_mb_per_epoch": list(self.per_epoch),
            "peak_resident_mb": round(peak_resident_mb(), 1),
        }
