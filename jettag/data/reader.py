"""Reading jets from files into awkward arrays, chunk by chunk.

Supported: ROOT trees (uproot) with one entry per jet and jagged particle branches (JetClass), and
Parquet tables with one row per jet and list columns (the converted top-tagging set). The format
is recognised from the file's first bytes, not its name.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import awkward as ak

from jettag.errors import ConfigError, DataError


def resolve_files(patterns: str | Sequence[str] | None, key: str) -> list[str]:
    """Expand paths and glob patterns (in order, each pattern's matches sorted) into a file list."""
    if patterns is None or (isinstance(patterns, str) and not patterns.strip()):
        raise ConfigError(
            f"{key} is not set; pass a list of files or glob patterns, e.g. {key}='[a.root,b.root]'."
        )
    if isinstance(patterns, str):
        patterns = [patterns]
    patterns = list(patterns)
    if not patterns:
        raise ConfigError(
            f"{key} is empty; pass a list of files or glob patterns, e.g. {key}='[a.root,b.root]'."
        )
    files: list[str] = []
    for pattern in patterns:
        pattern = os.path.expanduser(str(pattern))
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern))
            if not matches:
                raise DataError(
                    f"{key}: no file matches the pattern '{pattern}'; check the directory and the glob."
                )
            files.extend(matches)
        elif not os.path.exists(pattern):
            raise DataError(f"{key}: the file '{pattern}' does not exist; check the path.")
        elif os.path.isdir(pattern):
            raise DataError(
                f"{key}: '{pattern}' is a directory; give the files in it, e.g. '{pattern}/*.root'."
            )
        else:
            files.append(pattern)
    return files


def detect_format(path: str) -> str:
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as err:
        raise DataError(f"cannot open '{path}' ({err.strerror}); check the file's permissions.") from None
    if magic == b"root":
        return "root"
    if magic == b"PAR1":
        return "parquet"
    if not magic:
        raise DataError(
            f"the file '{path}' is empty (0 bytes); regenerate it or remove it from the file list."
        )
    raise DataError(
        f"'{path}' is neither a ROOT nor a Parquet file (it starts with {magic!r}); "
        "jettag reads ROOT trees and Parquet tables."
    )


TREE_CLASSES = ("TTree", "TNtuple", "ROOT::RNTuple")


@dataclass
class Chunk:
    path: str
    start: int
    stop: int
    arrays: ak.Array

    @property
    def where(self) -> str:
        return f"'{self.path}' (entries {self.start}-{self.stop})"


class JetFile:
    """One input file: its format, available branches and number of jets."""

    def __init__(self, path: str, treename: str = "tree"):
        self.path = path
        self.format = detect_format(path)
        self.treename = treename
        if self.format == "root":
            self._open_root()
        else:
            self._open_parquet()

    def _open_root(self) -> None:
        import uproot

        try:
            file = uproot.open(self.path)
        except Exception as err:  # uproot raises many types for damaged files
            raise DataError(
                f"cannot read '{self.path}' as a ROOT file ({type(err).__name__}: {_first_line(err)}); "
                "check that the file was written completely."
            ) from None
        trees = [k.split(";")[0] for k, cls in file.classnames().items() if cls in TREE_CLASSES]
        if self.treename not in trees:
            found = ", ".join(sorted(set(trees))) or "no trees"
            raise DataError(
                f"'{self.path}' has no tree '{self.treename}' (it holds {found}); set data.treename to the tree's name."
            )
        self._tree = file[self.treename]
        self.branches = set(self._tree.keys())
        self.num_entries = int(self._tree.num_entries)

    def _open_parquet(self) -> None:
        import pyarrow.parquet as pq

        try:
            self._parquet = pq.ParquetFile(self.path)
        except Exception as err:
            raise DataError(
                f"cannot read '{self.path}' as a Parquet file ({_first_line(err)}); check that it was written completely."
            ) from None
        self.branches = set(self._parquet.schema_arrow.names)
        self.num_entries = int(self._parquet.metadata.num_rows)

    def check_branches(self, branches: Iterable[str], purpose: str) -> None:
        missing = sorted(set(branches) - self.branches)
        if missing:
            what = "branch" if self.format == "root" else "column"
            raise DataError(
                f"'{self.path}' has no {what} {', '.join(repr(m) for m in missing)} needed for {purpose}; "
                f"check the name in the data config (it has {len(self.branches)} {what}es)."
            )

    def iterate(self, branches: Sequence[str], chunk_size: int) -> Iterator[Chunk]:
        branches = sorted(set(branches))
        if self.format == "root":
            yield from self._iterate_root(branches, chunk_size)
        else:
            yield from self._iterate_parquet(branches, chunk_size)

    def _iterate_root(self, branches: list[str], chunk_size: int) -> Iterator[Chunk]:
        for start in range(0, self.num_entries, chunk_size):
            stop = min(start + chunk_size, self.num_entries)
            try:
                arrays = self._tree.arrays(branches, entry_start=start, entry_stop=stop, library="ak")
            except Exception as err:
                raise DataError(
                    f"cannot read entries {start}-{stop} of '{self.path}' ({type(err).__name__}: "
                    f"{_first_line(err)}); the file may be truncated or corrupt."
                ) from None
            yield Chunk(self.path, start, stop, arrays)

    def _iterate_parquet(self, branches: list[str], chunk_size: int) -> Iterator[Chunk]:
        start = 0
        try:
            for batch in self._parquet.iter_batches(batch_size=chunk_size, columns=branches):
                arrays = ak.from_arrow(batch)
                stop = start + len(arrays)
                yield Chunk(self.path, start, stop, arrays)
                start = stop
        except DataError:
            raise
        except Exception as err:
            raise DataError(
                f"cannot read '{self.path}' after entry {start} ({_first_line(err)}); "
                "the file may be truncated or corrupt."
            ) from None


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
