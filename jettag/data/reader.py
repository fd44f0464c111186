"""Reading jets from files into awkward arrays, chunk by chunk.

Supported: ROOT trees (uproot) with one entry per jet and jagged particle branches (JetClass),
Parquet tables with one row per jet and list columns (the converted top-tagging set), and the
original top-tagging HDF5 table (pandas `HDFStore`, columns `E_i PX_i PY_i PZ_i`, `is_signal_new`),
which is turned into the JetClass-like schema chunk by chunk. The format is recognised from the
file's first bytes, not its name.

File lists are paths and glob patterns; an entry `NAME:pattern` (e.g. `Hbb:/data/HToBB_*.root`) is
a per-class group: its files need no label branches, every jet in them is of class NAME.
"""

from __future__ import annotations

import gc
import glob
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import awkward as ak
import numpy as np

from jettag.data.toptagging import TOP_HDF5_BRANCHES, hdf5_num_particles, top_table_to_jets
from jettag.errors import ConfigError, DataError

# `NAME:pattern`, but not a URL such as root://host//file.root
_GROUP = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):(?!//)(.+)$")


@dataclass(frozen=True)
class FileEntry:
    path: str
    group: str | None = None  # class name of a per-class group, None: labels come from the file


def resolve_entries(patterns: str | Sequence[str] | None, key: str) -> list[FileEntry]:
    """Expand paths, glob patterns and `NAME:pattern` groups (in order, each pattern's matches sorted)."""
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
    entries: list[FileEntry] = []
    for pattern in patterns:
        pattern, group = str(pattern), None
        match = _GROUP.match(pattern)
        if match and not os.path.exists(pattern):
            group, pattern = match.groups()
        pattern = os.path.expanduser(pattern)
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern))
            if not matches:
                raise DataError(
                    f"{key}: no file matches the pattern '{pattern}'; check the directory and the glob."
                )
            entries.extend(FileEntry(m, group) for m in matches)
        elif not os.path.exists(pattern):
            raise DataError(f"{key}: the file '{pattern}' does not exist; check the path.")
        elif os.path.isdir(pattern):
            raise DataError(
                f"{key}: '{pattern}' is a directory; give the files in it, e.g. '{pattern}/*.root'."
            )
        else:
            entries.append(FileEntry(pattern, group))
    return entries


def resolve_files(patterns: str | Sequence[str] | None, key: str) -> list[str]:
    """Expand paths and glob patterns (in order, each pattern's matches sorted) into a file list."""
    return [entry.path for entry in resolve_entries(patterns, key)]


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
    if magic == b"\x89HDF":
        return "hdf5"
    if not magic:
        raise DataError(
            f"the file '{path}' is empty (0 bytes); regenerate it or remove it from the file list."
        )
    raise DataError(
        f"'{path}' is neither a ROOT nor a Parquet file, nor an HDF5 table (it starts with {magic!r}); "
        "jettag reads ROOT trees, Parquet tables and the top-tagging HDF5 table."
    )


TREE_CLASSES = ("TTree", "TNtuple", "ROOT::RNTuple")
# Files above this size are read with plain reads, not memory-mapped (see JetFile._open_root).
MEMORY_MAP_MAX_BYTES = 256 * 2**20


@dataclass
class Chunk:
    path: str
    start: int
    stop: int
    arrays: ak.Array
    label: int | None = None  # class index of a per-class group
    offset: int = 0  # entry number of the file's first entry in the chain of files read

    @property
    def where(self) -> str:
        return f"'{self.path}' (entries {self.start}-{self.stop})"


class JetFile:
    """One input file: its format, available branches and number of jets.

    `label` is the class index of every jet in the file when it belongs to a per-class group.
    """

    def __init__(self, path: str, treename: str = "tree", label: int | None = None):
        self.path = path
        self.label = label
        self.format = detect_format(path)
        self.treename = treename
        if self.format == "root":
            self._open_root()
        elif self.format == "hdf5":
            self._open_hdf5()
        else:
            self._open_parquet()

    def _open_root(self) -> None:
        import uproot

        use_fast_zlib()
        # No array cache: a chunk is read once, and a cache would keep it alive with the file.
        # Local files are memory-mapped: uproot's default (fsspec) source hands every read to an
        # asyncio thread, ~10% slower in one thread and more with the loader's threads. But every
        # mapped page read stays resident while the file is open, so a large file (scored chunk by
        # chunk: 1M jets grew by the file's whole 1.6 GB) is read with plain reads instead.
        handler = None
        if "://" not in self.path:
            large = os.path.getsize(self.path) > MEMORY_MAP_MAX_BYTES
            handler = uproot.source.file.MultithreadedFileSource if large else uproot.source.file.MemmapSource
        try:
            # uproot reads the directory, the streamers and the tree's (or RNTuple's) metadata lazily,
            # in any of these steps, and raises many types when their bytes are damaged
            file = uproot.open(self.path, array_cache=None, handler=handler)
            trees = [k.split(";")[0] for k, cls in file.classnames().items() if cls in TREE_CLASSES]
            if self.treename in trees:
                self._tree = file[self.treename]
                self.branches = set(self._tree.keys())
                self.num_entries = int(self._tree.num_entries)
        except Exception as err:
            raise damaged(self.path, "it as a ROOT file", err) from None
        if self.treename not in trees:
            found = ", ".join(sorted(set(trees))) or "no trees"
            raise DataError(
                f"'{self.path}' has no tree '{self.treename}' (it holds {found}); set data.treename to the tree's name."
            )

    def _open_parquet(self) -> None:
        import pyarrow.parquet as pq

        try:
            self._parquet = pq.ParquetFile(self.path)
            self.branches = set(self._parquet.schema_arrow.names)
            self.num_entries = int(self._parquet.metadata.num_rows)
        except Exception as err:
            raise damaged(self.path, "it as a Parquet file", err) from None

    def _open_hdf5(self) -> None:
        import pandas as pd

        try:
            with pd.HDFStore(self.path, "r") as store:
                keys = [k.lstrip("/") for k in store.keys()]
                key = "table" if "table" in keys else (keys[0] if len(keys) == 1 else None)
                if key is None:
                    raise DataError(
                        f"'{self.path}' holds the HDF5 tables {keys or 'none'}, not one named 'table'; "
                        "jettag reads the top-tagging table (key 'table')."
                    )
                storer = store.get_storer(key)
                num = storer.nrows if getattr(storer, "nrows", None) is not None else storer.shape[0]
                columns = [str(c) for c in store.select(key, start=0, stop=1).columns]
        except DataError:
            raise
        except Exception as err:
            raise damaged(self.path, "it as a pandas HDF5 table", err) from None
        self._hdf5_key = key
        self._hdf5_particles = hdf5_num_particles(columns, self.path)
        self.branches = set(TOP_HDF5_BRANCHES)
        self.num_entries = int(num)

    def check_branches(self, branches: Iterable[str], purpose: str) -> None:
        missing = sorted(set(branches) - self.branches)
        if missing:
            what = "branch" if self.format == "root" else "column"
            raise DataError(
                f"'{self.path}' has no {what} {', '.join(repr(m) for m in missing)} needed for {purpose}; "
                f"check the name in the data config (it has {len(self.branches)} {what}es)."
            )

    def lacks_inputs(self, names: Sequence[str], feature_set: str) -> DataError:
        """The sentence for input branches of `feature_set` that the file lacks and jettag cannot derive."""
        return DataError(
            f"'{self.path}' has no branch {', '.join(names)} for feature set '{feature_set}' and it cannot be "
            f"derived from the four-momenta; choose another feature set or map it with data.branches."
        )

    def iterate(
        self, branches: Sequence[str], chunk_size: int, start: int = 0, stop: int | None = None
    ) -> Iterator[Chunk]:
        """Chunks of at most `chunk_size` entries of the entry range `start`-`stop` (default: all)."""
        branches = sorted(set(branches))
        stop = self.num_entries if stop is None else min(stop, self.num_entries)
        if start >= stop:
            return
        if self.format == "root":
            chunks = self._iterate_root(branches, chunk_size, start, stop)
        elif self.format == "hdf5":
            chunks = self._iterate_hdf5(branches, chunk_size, start, stop)
        else:
            chunks = self._iterate_parquet(branches, chunk_size, start, stop)
        for chunk in chunks:
            chunk.label = self.label
            yield chunk

    def piece_bounds(self, chunk_size: int) -> list[int]:
        """Entry boundaries of pieces of about `chunk_size` entries that do not cut the file's storage
        units (ROOT baskets common to all branches, Parquet row groups): a piece that starts or ends
        inside a basket would decompress that whole basket again for a few entries."""
        try:
            units = self._storage_units(chunk_size)
        except Exception as err:  # the tree's metadata is read here: its bytes may be damaged
            raise damaged(self.path, "the boundaries of its baskets", err) from None
        if not units or units[-1] != self.num_entries:
            units.append(self.num_entries)
        bounds = [0]
        for unit in units[1:]:
            if unit - bounds[-1] >= chunk_size or unit == self.num_entries:
                bounds.append(unit)
        return bounds if self.num_entries else [0]

    def _storage_units(self, chunk_size: int) -> list[int]:
        if self.format == "root" and hasattr(self._tree, "cluster_summaries"):  # RNTuple: its clusters
            return [0, *np.cumsum([c.num_entries for c in self._tree.cluster_summaries]).tolist()]
        if self.format == "root":
            return [int(x) for x in self._tree.common_entry_offsets()]
        if self.format == "parquet":
            rows = [self._parquet.metadata.row_group(i).num_rows for i in range(self._parquet.num_row_groups)]
            return [0, *np.cumsum(rows).tolist()]
        return [*list(range(0, self.num_entries, chunk_size)), self.num_entries]

    def close(self) -> None:
        """Release the file handle and the file's objects (streaming opens many files, one after the other).

        uproot's objects of an open file (its directory, the tree, branches, leaves, cursors: about
        1,800 objects, 0.35 MB for a small tree) hold reference cycles, so dropping them frees
        nothing until the cycle collector runs, and its full pass is rare in a large process. Garbage
        of many files then lies among the objects allocated meanwhile; once collected, it leaves
        CPython's memory pools pinned by those few live objects, and the resident set grows by about
        0.35 MB per file. A collection of the young generations right here frees the file's objects
        at once (they are young: created since the file was opened), in about half a millisecond,
        whatever the size of the process (a full collection takes 0.2-0.3 s with PyTorch loaded).
        """
        tree = getattr(self, "_tree", None)
        if tree is not None:
            tree.file.source.close()
            self._tree = None
            del tree
            gc.collect(1)

    def read(self, branches: Sequence[str], start: int, stop: int) -> Chunk:
        """One chunk: the entries `start`-`stop`."""
        return next(self.iterate(branches, stop - start, start, stop))

    def _iterate_root(self, branches: list[str], chunk_size: int, first: int, last: int) -> Iterator[Chunk]:
        for start in range(first, last, chunk_size):
            stop = min(start + chunk_size, last)
            try:
                arrays = self._tree.arrays(
                    branches,
                    entry_start=start,
                    entry_stop=stop,
                    library="ak",
                )
            except Exception as err:
                raise damaged(self.path, f"entries {start}-{stop}", err) from None
            yield Chunk(self.path, start, stop, arrays)

    def _iterate_parquet(
        self, branches: list[str], chunk_size: int, first: int, last: int
    ) -> Iterator[Chunk]:
        start = first
        try:
            if first == 0 and last == self.num_entries:
                for batch in self._parquet.iter_batches(batch_size=chunk_size, columns=branches):
                    arrays = ak.from_arrow(batch)
                    stop = start + len(arrays)
                    yield Chunk(self.path, start, stop, arrays)
                    start = stop
                return
            # an entry range: read the row groups that overlap it, then cut
            bounds = np.cumsum([0] + [self._parquet.metadata.row_group(i).num_rows
                                      for i in range(self._parquet.num_row_groups)])  # fmt: skip
            groups = [i for i in range(len(bounds) - 1) if bounds[i] < last and bounds[i + 1] > first]
            table = self._parquet.read_row_groups(groups, columns=branches)
            arrays = ak.from_arrow(table)[first - bounds[groups[0]] : last - bounds[groups[0]]]
            for start in range(first, last, chunk_size):
                stop = min(start + chunk_size, last)
                yield Chunk(self.path, start, stop, arrays[start - first : stop - first])
        except DataError:
            raise
        except Exception as err:
            raise damaged(self.path, f"entries {start}-{last}", err) from None

    def _iterate_hdf5(self, branches: list[str], chunk_size: int, first: int, last: int) -> Iterator[Chunk]:
        import pandas as pd

        for start in range(first, last, chunk_size):
            stop = min(start + chunk_size, last)
            try:
                frame = pd.read_hdf(self.path, self._hdf5_key, start=start, stop=stop)
            except Exception as err:
                raise damaged(self.path, f"entries {start}-{stop}", err) from None
            arrays = top_table_to_jets(frame, self._hdf5_particles)
            yield Chunk(self.path, start, stop, arrays[[b for b in branches if b in arrays.fields]])


def use_fast_zlib() -> bool:
    """Decompress ROOT's zlib baskets with ISA-L (the `isal` package, a dependency) when installed.

    ISA-L inflates the same bytes about 1.5x faster than the standard library's zlib (0.43 s against
    0.64 s for the baskets of a 100,000-jet JetClass-like file here). uproot supports it as
    `ZLIB.library = "isal"`, but in uproot 5.7 reading goes through the module's decompressor
    object, not the `ZLIB` class, so it is set there. A choice the user made (any value other than
    the default "zlib") is left alone. True when ISA-L is in use.
    """
    try:
        from isal import isal_zlib  # noqa: F401
        from uproot import compression
    except ImportError:
        return False
    decompressor = getattr(compression, "_decompress_ZLIB", None)
    if decompressor is None or getattr(decompressor, "library", None) not in ("zlib", "isal"):
        return False
    decompressor.library = "isal"
    return True


def damaged(path: str, what: str, err: Exception) -> DataError:
    """The one sentence for a file whose bytes do not decode: `what` could not be read, and why."""
    return DataError(
        f"'{path}' is damaged (truncated or corrupt): cannot read {what} ({type(err).__name__}: "
        f"{_first_line(err)}); copy or write the file again, or skip damaged files with data.on_bad_file=skip."
    )


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
