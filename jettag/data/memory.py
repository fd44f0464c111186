"""glibc malloc settings for the loader's churn of large arrays.

Reading and building a chunk of jets allocates and frees many arrays of a few MB (decompressed
baskets, flat particle columns, feature matrices, batches). With glibc's defaults, freed memory at
the top of a heap is given back to the system as soon as more than `M_TRIM_THRESHOLD` is free, and
blocks above `M_MMAP_THRESHOLD` are mapped afresh each time; either way the next chunk's arrays
land on new pages, and the kernel's page faults (zeroing every 4 KiB page) then cost about as much
as computing the features: building the kinpid features of 300,000 jets took 1.41 s with the
defaults and 0.80 s with the settings below (`scripts/bench_loader.py` measures the whole loader).

`keep_freed_memory()` keeps up to `TRIM_THRESHOLD` of freed memory per heap for reuse and serves
blocks up to `MMAP_THRESHOLD` from the heap. The resident memory then stays at the loader's
high-water mark instead of going up and down with every chunk; it does not grow with the number
of jets or files read. Set `JETTAG_MALLOC_DEFAULTS=1` to keep glibc's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
M_MMAP_THRESHOLD = -3
TRIM_THRESHOLD = 256 * 2**20
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest allowed value on 64-bit systems

_applied: dict[int, bool] = {}  # process id -> result (worker processes apply it again)


def keep_freed_memory() -> bool:
    """Apply the settings once per process (glibc only); True when they are in effect."""
    pid = os.getpid()
    if pid not in _applied:
        _applied[pid] = _apply()
    return _applied[pid]


def _glibc_function(name: str):
    """glibc's function `name`, or None where it is missing (macOS, musl: nothing to tune) or the
    user asked for glibc's defaults (JETTAG_MALLOC_DEFAULTS=1)."""
    if os.environ.get("JETTAG_MALLOC_DEFAULTS", "").strip() not in ("", "0"):
        return None
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def _apply() -> bool:
    mallopt = _glibc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    log.debug("glibc malloc: mmap threshold %d, trim threshold %d (%s)", MMAP_THRESHOLD, TRIM_THRESHOLD, ok)
    return ok


def give_back_freed_memory() -> bool:
    """Return the heap's free pages to the system (glibc's `malloc_trim(0)`); True where it ran.

    Between the phases of a run (after an epoch's training and validation, before testing): the
    tensors of a step are freed, but glibc keeps their pages in its arenas, so each phase's transient
    memory would otherwise stack on the last one's. Costs a few milliseconds; not for every step (the
    next step would fault the pages in again)."""
    trim = _glibc_function("malloc_trim")
    if trim is None:
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True
