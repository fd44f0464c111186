"""Reading a stream's pieces in background threads, with a few files kept open and memory kept flat.

`PieceReader` reads (uproot, decompressing its own baskets) and builds whole pieces in its own thread,
keeping the OPEN_FILES files it read last open: pieces come in a random order, and a set of few files
would otherwise be opened again for almost every piece (~8 ms each, in uproot). The read plan of each
file is the one the scan made (`JetSource`): nothing is planned again.

While a stream runs, the process's objects are frozen (`gc.freeze`, see `freeze_gc`), so that a
reader can free the uproot objects of a file it closes at once (they hold reference cycles).
"""

from __future__ import annotations

import gc
from collections import Counter, OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor

from jettag.data.arrays import JetArrays
from jettag.data.reader import JetFile
from jettag.data.source import JetSource
from jettag.data.streaming.sharding import Piece

OPEN_FILES = 4  # files kept open by a reader (the ones read last)
READERS = 2  # threads reading and building pieces (each with its own open files)
GC_EVERY = 64  # files closed between two collections of reference cycles

_FROZEN = {"depth": 0, "ours": False}  # streams running in this process, and whether they froze it


def freeze_gc() -> None:
    """Move the process's objects to the collector's permanent generation (`gc.freeze`) while a
    stream runs, so that a full collection only visits the objects made since (milliseconds instead
    of 0.2-0.3 s with PyTorch loaded) and the readers can free the files they close at once. Nested
    streams (validation inside a training epoch) share the outermost freeze; a process frozen by
    someone else is left as it is (the readers then collect every GC_EVERY files)."""
    if _FROZEN["depth"] == 0:
        _FROZEN["ours"] = gc.get_freeze_count() == 0
        if _FROZEN["ours"]:
            gc.freeze()
    _FROZEN["depth"] += 1


def unfreeze_gc() -> None:
    _FROZEN["depth"] -= 1
    if _FROZEN["depth"] == 0 and _FROZEN["ours"]:
        gc.unfreeze()
        _FROZEN["ours"] = False


class PieceReader:
    """Reads and builds pieces of a source's files in its own thread (see the module docstring)."""

    def __init__(self, source: JetSource, name: str):
        self.source = source
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=name)
        self.files: OrderedDict[int, JetFile] = OrderedDict()
        self.closed = 0

    def submit(self, piece: Piece) -> Future:
        """The future of the piece's `(JetArrays, skipped)`."""
        return self.executor.submit(self.load, piece)

    def load(self, piece: Piece) -> tuple[JetArrays, Counter]:
        return self.source.build(self.open(piece.file), piece.file, piece.start, piece.stop)

    def open(self, index: int) -> JetFile:
        if index in self.files:
            self.files.move_to_end(index)
            return self.files[index]
        while len(self.files) >= OPEN_FILES:
            self.files.popitem(last=False)[1].close()
            self.closed += 1
            # uproot's file objects hold reference cycles: only the cycle collector frees them.
            # JetFile.close collects the young generation, but a file kept open while others were
            # opened and closed (by this reader or the other) has its objects in the old one: they
            # are collected here, at once while the rest of the process is frozen (`freeze_gc`),
            # else every GC_EVERY files (a full pass then takes 0.2-0.3 s with PyTorch loaded).
            if _FROZEN["ours"] or self.closed % GC_EVERY == 0:
                gc.collect()
        self.files[index] = self.source.open(index)
        return self.files[index]

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        for open_file in self.files.values():
            open_file.close()
        self.files.clear()
