"""The one read path: the files of a split checked and planned once, then read chunk by chunk.

    files -> JetSource.scan()  each file opened once: format, branches checked, read plan, entry count,
                               (for streaming) piece boundaries; a bad file is an error or, with
                               `skip_bad_files`, skipped and counted
          -> JetSource.chunks() / read()   each file opened once per pass, its entries read in chunks
                               and built into `JetArrays` (in-memory training, the fit sample,
                               jettag-predict)
          -> JetSource.open() / build()    a file and a piece of it, with the plan made by the scan
                               (the stream's readers)

Jets are numbered by their entry in the chain of the split's files (the file's offset plus the entry
in the file, as a TChain numbers them): `JetArrays.entries`, then `JetBatch.entry`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from tqdm.auto import tqdm

from jettag.data.arrays import JetArrays
from jettag.data.jets import JetBuilder, ReadPlan
from jettag.data.reader import Chunk, FileEntry, JetFile
from jettag.errors import ConfigError, DataError, JetTagError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceFile:
    """A file that opened and passed the checks: what reading it needs."""

    path: str
    label: int | None  # class index of a per-class group, None: labels come from the file
    num_entries: int
    offset: int  # entry number of its first entry in the chain of the split's files
    plan: ReadPlan | None  # None: the file has no entries
    bounds: tuple[int, ...] | None = None  # piece boundaries (JetFile.piece_bounds), when asked for


def _as_entry(f) -> FileEntry:
    return f if isinstance(f, FileEntry) else FileEntry(str(f))


class JetSource:
    """The files of one split, read through one `JetBuilder`.

    `entries` are the split's files (paths or `FileEntry`s of per-class groups); `key` names them in
    messages (`data.train_files`). With `piece_size`, the scan also records each file's piece
    boundaries for streaming.
    """

    def __init__(
        self,
        entries: Sequence[FileEntry | str],
        builder: JetBuilder,
        treename: str,
        key: str,
        skip_bad_files: bool = False,
        piece_size: int | None = None,
    ):
        self.entries = [_as_entry(f) for f in entries]
        self.builder = builder
        self.treename = treename
        self.key = key
        self.skip_bad_files = skip_bad_files
        self.piece_size = piece_size
        self.skipped: Counter = Counter()  # bad files found by the scan
        self._files: list[SourceFile] | None = None

    @property
    def files(self) -> list[SourceFile]:
        """The checked files (scanned on first use)."""
        if self._files is None:
            self._files = self.scan()
        return self._files

    @property
    def total(self) -> int:
        return sum(f.num_entries for f in self.files)

    def scan(self) -> list[SourceFile]:
        """Open every file once, one at a time, check it and plan its reading.

        One file is open at a time: with all of them open together, uproot's objects of every file
        (about 0.35 MB each) were alive at once, and the few long-lived objects allocated meanwhile
        landed among them; once the files were freed, those kept CPython's memory pools (1 MB arenas)
        from being released, and the resident set stayed about 0.35 MB higher per file.
        """
        spec = self.builder.labels
        files, offset = [], 0
        for entry in self.entries:
            label = spec.group_index(entry.group, self.key) if entry.group is not None and spec else None
            try:
                jet_file = JetFile(entry.path, self.treename, label)
                try:
                    # a file without entries adds nothing, whatever its branches
                    plan = self.builder.plan(jet_file) if jet_file.num_entries else None
                    bounds = tuple(jet_file.piece_bounds(self.piece_size)) if self.piece_size else None
                finally:
                    jet_file.close()
            except JetTagError as err:
                if not self.skip_bad_files or isinstance(err, ConfigError):
                    raise
                lost = _entries_if_readable(entry.path, self.treename)
                log.warning("%s: skipping a bad file (%d jets): %s", self.key, lost, err)
                self.skipped["bad_file"] += lost
                self.skipped["bad_files"] += 1
                continue
            files.append(SourceFile(entry.path, label, jet_file.num_entries, offset, plan, bounds))
            offset += jet_file.num_entries
        return files

    def open(self, index: int) -> JetFile:
        info = self.files[index]
        return JetFile(info.path, self.treename, info.label)

    def build(
        self, jet_file: JetFile, index: int, start: int, stop: int, builder: JetBuilder | None = None
    ) -> tuple[JetArrays, Counter]:
        """The jets of entries `start`-`stop` of the open file number `index`, in one chunk."""
        info = self.files[index]
        builder = builder or self.builder
        chunk = jet_file.read(info.plan.all_branches(builder.rename), start, stop)
        chunk.offset = info.offset
        return builder.build(chunk, info.plan)

    def chunks(
        self,
        chunk_size: int,
        ranges: Sequence[tuple[int, int]] | None = None,
        builder: JetBuilder | None = None,
        progress: bool = False,
        desc: str | None = None,
        bad: Counter | None = None,
    ) -> Iterator[tuple[SourceFile, Chunk, JetArrays, Counter]]:
        """Every file (or the entry `ranges` of each) read once, chunk by chunk: (file, chunk as read,
        its jets, jets the builder skipped). A chunk that fails to read is an error or, with
        `skip_bad_files`, skipped (its entries counted as `bad_file` in `bad`) and reading goes on
        after it."""
        bad = Counter() if bad is None else bad
        builder = builder or self.builder
        files = self.files
        ranges = [(0, f.num_entries) for f in files] if ranges is None else ranges
        total = sum(stop - start for start, stop in ranges)
        with tqdm(total=total, unit=" jets", desc=desc or f"reading {self.key}", disable=not progress,
                  leave=False) as bar:  # fmt: skip
            for info, (first, last) in zip(files, ranges, strict=False):
                if info.plan is None or first >= last:
                    continue
                try:
                    jet_file = JetFile(info.path, self.treename, info.label)
                except DataError as err:  # it opened when scanned: changed or gone since
                    if not self.skip_bad_files:
                        raise
                    self._skip(err, last - first, bar, bad)
                    continue
                read = info.plan.all_branches(builder.rename)
                position = first
                try:
                    while position < last:
                        try:
                            for chunk in jet_file.iterate(read, chunk_size, position, last):
                                chunk.offset = info.offset
                                jets, skipped = builder.build(chunk, info.plan)
                                bar.update(chunk.stop - chunk.start)
                                position = chunk.stop
                                yield info, chunk, jets, skipped
                        except DataError as err:
                            if not self.skip_bad_files:
                                raise
                            lost = min(chunk_size, last - position)  # the chunk that failed
                            self._skip(err, lost, bar, bad)
                            position += lost
                finally:
                    jet_file.close()

    def _skip(self, err: DataError, lost: int, bar, bad: Counter) -> None:
        log.warning("%s: skipped %d jets: %s", self.key, lost, err)
        bad["bad_file"] += lost
        bar.update(lost)

    def read(
        self,
        chunk_size: int,
        ranges: Sequence[tuple[int, int]] | None = None,
        builder: JetBuilder | None = None,
        progress: bool = False,
        what: str | None = None,
    ) -> tuple[JetArrays, Counter]:
        """All the jets of the files (or of the entry `ranges` of each) in memory, and those skipped
        (including the bad files and chunks)."""
        ranges_total = sum(b - a for a, b in ranges) if ranges is not None else self.total
        if ranges_total == 0:
            names = ", ".join(e.path for e in self.entries)
            raise DataError(
                f"{self.key}: the files {names} hold no jets; check that they are the right files."
            )
        # a whole pass counts the bad files of the scan too
        skipped = Counter(self.skipped) if ranges is None else Counter()
        parts = []
        desc = f"reading {what or self.key}"
        for _, _, jets, chunk_skipped in self.chunks(chunk_size, ranges, builder, progress, desc, skipped):
            if len(jets):
                parts.append(jets)
            skipped += chunk_skipped
        if not parts:
            reasons = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in skipped.items())
            raise DataError(
                f"{what or self.key}: all {ranges_total} jets were skipped ({reasons}); nothing is left to use."
            )
        return JetArrays.concatenate(parts), skipped


def _entries_if_readable(path: str, treename: str) -> int:
    try:
        jet_file = JetFile(path, treename)
    except JetTagError:
        return 0
    jet_file.close()
    return jet_file.num_entries


def read_jets(
    files: Sequence[str | FileEntry],
    builder: JetBuilder,
    treename: str,
    chunk_size: int,
    key: str,
    progress: bool = True,
    skip_bad_files: bool = False,
    ranges: Sequence[tuple[int, int]] | None = None,
) -> tuple[JetArrays, Counter]:
    """Read and convert every jet of `files` (or the entry `ranges` of each), chunk by chunk."""
    source = JetSource(files, builder, treename, key, skip_bad_files)
    return source.read(chunk_size, ranges, progress=progress)
