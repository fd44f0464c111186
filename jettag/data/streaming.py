"""Streaming jets from many files: sharded over DataLoader workers and DDP ranks, shuffled, batched.

`JetStream` is an `IterableDataset` that yields padded batches (the same dicts as `JetDataset`).
Within an epoch every jet is read once by exactly one worker of one rank:

1. The files are cut into pieces of about `chunk_size` entries (on basket / row-group boundaries). Each epoch the pieces are put in a random
   order drawn from `(seed, epoch)` (the same on every rank and worker), and the resulting stream
   of entries is cut into `world_size x num_workers` contiguous shares of equal size (+-1 jet).
   Worker `w` of rank `r` reads share `r * num_workers + w`.
2. A worker reads its pieces in order (two threads reading and building ahead, each keeping the
   few files it read last open, so memory does not grow with the number of files), and keeps the
   jets in a shuffle buffer of `shuffle_buffer` jets. Pieces come from files all over the data
   set, so the buffer mixes files and classes (per-class files included); batches are drawn from
   the buffer at random, half of it stays to mix with the next pieces.
3. The order depends only on `(seed, epoch, share)`: the same seed gives the same batches, each
   epoch another order.

Equal batch counts under DDP: all ranks must run the same number of steps, or the gradient
all-reduce waits forever. With `world_size > 1` every worker yields exactly
`ceil(share / batch_size)` batches, a number known before reading (it comes from the entry counts
and is the same for all ranks). Jets are never dropped to get there: the last batches of a share are
made smaller when jets were skipped (selection, empty jets, bad files, reweighting); only if a share
has fewer jets left than batches to fill are jets repeated, and those are counted (`repeated`).
A single process (or a single rank) yields every surviving jet once, the last batch smaller.
Lightning's `use_distributed_sampler` does not apply to iterable datasets: the sharding is here.
"""

from __future__ import annotations

import copy
import gc
import itertools
import logging
import math
import os
from collections import Counter, OrderedDict, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import awkward as ak
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from jettag.data.dataset import torch_world
from jettag.data.jets import JetArrays, JetBuilder, ReadPlan, as_rows, padding_rows, rows_with_zero
from jettag.data.memory import keep_freed_memory
from jettag.data.reader import Chunk, JetFile
from jettag.errors import DataError

log = logging.getLogger(__name__)

PREFETCH = 3  # pieces in flight ahead of batching (being read and built)
OPEN_FILES = 4  # files kept open by a reader (the ones read last)
READERS = 2  # threads reading and building pieces (each with its own open files)
GC_EVERY = 64  # files closed between two collections of reference cycles
JET_ID = "__jettag_jet_id"  # global number of a jet: file offset + entry, carried as an observer


@dataclass(frozen=True)
class StreamFile:
    path: str
    num_entries: int
    label: int | None = None  # class of a per-class group
    bounds: tuple[int, ...] | None = None  # piece boundaries (JetFile.piece_bounds); None: every chunk_size


@dataclass(frozen=True)
class Piece:
    file: int
    start: int
    stop: int


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) of this process: torch.distributed if initialized, else the launcher's env."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch_world()
    for rank_key, world_key in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if rank_key in os.environ and world_key in os.environ:
            return int(os.environ[rank_key]), int(os.environ[world_key])
    return 0, 1


def cut_shares(pieces: Sequence[Piece], shares: int) -> list[list[Piece]]:
    """The stream of `pieces` cut into `shares` contiguous parts of equal size (+-1 entry)."""
    total = sum(p.stop - p.start for p in pieces)
    bounds = [total * i // shares for i in range(shares + 1)]
    out: list[list[Piece]] = [[] for _ in range(shares)]
    position, share = 0, 0
    for piece in pieces:
        start = piece.start
        while start < piece.stop:
            while bounds[share + 1] <= position:
                share += 1
            take = min(piece.stop - start, bounds[share + 1] - position)
            out[share].append(Piece(piece.file, start, start + take))
            start += take
            position += take
    return out


class JetStream(IterableDataset):
    """Padded batches streamed from `files`; see the module docstring for sharding and shuffling."""

    def __init__(
        self,
        files: Sequence[StreamFile],
        builder: JetBuilder,
        treename: str,
        batch_size: int,
        chunk_size: int,
        shuffle: bool,
        shuffle_buffer: int = 100_000,
        seed: int = 0,
        weights=None,  # a fitted `Reweighting`: jets are kept with probability = their weight
        skip_bad_files: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        self.files = list(files)
        self.builder = builder
        self.treename = treename
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.shuffle = shuffle
        self.shuffle_buffer = max(shuffle_buffer, batch_size) if shuffle else batch_size
        self.seed = seed
        self.weights = weights
        self.skip_bad_files = skip_bad_files
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.num_workers = 1  # set by the loader, for __len__

    @property
    def total(self) -> int:
        return sum(f.num_entries for f in self.files)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _ranks(self) -> tuple[int, int]:
        if self.rank is not None and self.world_size is not None:
            return self.rank, self.world_size
        return distributed_rank()

    def pieces(self, epoch: int) -> list[Piece]:
        pieces = []
        for i, f in enumerate(self.files):
            bounds = f.bounds or (*range(0, f.num_entries, self.chunk_size), f.num_entries)
            pieces += [Piece(i, a, b) for a, b in itertools.pairwise(bounds) if b > a]
        if self.shuffle:
            order = np.random.default_rng((self.seed, epoch)).permutation(len(pieces))
            pieces = [pieces[i] for i in order]
        return pieces

    def batches_per_share(self, num_workers: int, world_size: int) -> int:
        """Batches every share yields under DDP: ceil(largest share / batch size)."""
        return math.ceil(math.ceil(self.total / (num_workers * world_size)) / self.batch_size)

    def __len__(self) -> int:
        """Batches this rank yields in an epoch (exact under DDP, an upper bound otherwise)."""
        _, world = self._ranks()
        workers = max(self.num_workers, 1)
        if world > 1:
            return workers * self.batches_per_share(workers, world)
        shares = [self.total * (i + 1) // workers - self.total * i // workers for i in range(workers)]
        return sum(math.ceil(s / self.batch_size) for s in shares)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rank, world = self._ranks()
        share = rank * workers + worker
        epoch = self.epoch
        pieces = cut_shares(self.pieces(epoch), world * workers)[share]
        target = self.batches_per_share(workers, world) if world > 1 else None
        rng = np.random.default_rng((self.seed, epoch, share, 1))
        skipped: Counter = Counter()
        pool = _Pool()
        emitted = 0
        keep = self.shuffle_buffer // 2 if self.shuffle else 0
        size = self.batch_size

        for jets in self._read(pieces, rng, skipped):
            pool.add(jets)
            if len(pool) < self.shuffle_buffer:
                continue
            if self.shuffle:
                pool.shuffle(rng)
            n = (len(pool) - keep) // size
            if target is not None:
                n = max(0, min(n, target - 2 - emitted))  # the last two batches share what is left
            for i in range(n):
                yield pool.batch(np.arange(i * size, (i + 1) * size))
            emitted += n
            pool.drop_front(n * size)

        if self.shuffle:
            pool.shuffle(rng)
        left = len(pool)
        order = np.arange(left)
        slots = target - emitted if target is not None else math.ceil(left / size)
        if left == 0 and slots > 0:
            raise DataError(
                f"share {share} of the files (rank {rank}, worker {worker}) has no jet left after skipping, "
                f"but DDP needs {slots} batches from it; check data.selection and the files."
            )
        if left < slots:  # only under DDP, after heavy skipping: repeat jets to fill the batches
            order = np.concatenate([order, rng.integers(0, left, slots - left)])
            skipped["repeated"] += slots - left
        bounds, start = [], 0
        while slots > 2 and len(order) - start - size >= slots - 1:
            bounds.append((start, start + size))
            start += size
            slots -= 1
        if slots > 0:
            bounds += [(p[0], p[-1] + 1) for p in np.array_split(np.arange(start, len(order)), slots)]
        for i, (a, b) in enumerate(bounds):
            batch = pool.batch(order[a:b])
            if i == len(bounds) - 1:
                batch["skipped"] = dict(skipped)  # the loader sums these over workers
            yield batch

    def _read(
        self, pieces: Sequence[Piece], rng: np.random.Generator, skipped: Counter
    ) -> Iterator[JetArrays]:
        """The jets of `pieces`, in order.

        READERS background threads read (uproot, each decompressing its own baskets) and build the
        next PREFETCH pieces while this thread batches; decompression and numpy release the GIL, so
        one process keeps both cores of a small machine busy. The results are taken in the pieces'
        order and everything random (reweighting, shuffling) stays in this thread, so the batches
        are the same as without the threads.
        """
        keep_freed_memory()
        offsets = np.cumsum([0] + [f.num_entries for f in self.files])
        builder = copy.copy(self.builder)
        builder.observers = [*self.builder.observers, JET_ID]
        # READERS threads read (uproot) and build the next pieces, each piece wholly in one thread,
        # each thread with its own open files; this thread takes the results in the stream's order.
        readers = [_FileReader(self, builder, offsets, f"jettag-read{i}") for i in range(READERS)]
        submitted = 0

        def submit(piece: Piece) -> Future:
            nonlocal submitted
            reader = readers[submitted % len(readers)]
            submitted += 1
            return reader.submit(piece)

        ahead: deque[Future] = deque()
        _freeze_gc()
        try:
            ahead.extend(submit(piece) for piece in pieces[:PREFETCH])
            for i, piece in enumerate(pieces):
                future = ahead.popleft()
                if i + PREFETCH < len(pieces):
                    ahead.append(submit(pieces[i + PREFETCH]))
                try:
                    jets, chunk_skipped = future.result()
                except DataError as err:
                    if not self.skip_bad_files:
                        raise
                    log.warning("skipped %d jets: %s", piece.stop - piece.start, err)
                    skipped["bad_file"] += piece.stop - piece.start
                    continue
                skipped += chunk_skipped
                if self.weights is not None and len(jets):
                    keep = rng.random(len(jets)) < self.weights.weights(jets)
                    skipped["reweighted_out"] += int((~keep).sum())
                    jets = jets.take(np.flatnonzero(keep))
                if len(jets):
                    yield jets
        finally:
            for future in ahead:
                future.cancel()
            for reader in readers:
                reader.close()
            _unfreeze_gc()


_FROZEN = {"depth": 0, "ours": False}  # streams running in this process, and whether they froze it


def _freeze_gc() -> None:
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


def _unfreeze_gc() -> None:
    _FROZEN["depth"] -= 1
    if _FROZEN["depth"] == 0 and _FROZEN["ours"]:
        gc.unfreeze()
        _FROZEN["ours"] = False


class _FileReader:
    """Reads and builds pieces of a stream's files in its own thread, keeping the OPEN_FILES files it
    read last open: pieces come in a random order, and a set of few files would otherwise be opened
    again for almost every piece (~8 ms each, in uproot)."""

    def __init__(self, stream: JetStream, builder: JetBuilder, offsets: np.ndarray, name: str):
        self.stream = stream
        self.builder = builder  # the stream's builder, with the jet id as an observer
        self.offsets = offsets  # global jet id of each file's first entry
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=name)
        self.files: OrderedDict[int, tuple[JetFile, ReadPlan, list[str]]] = OrderedDict()
        self.closed = 0

    def submit(self, piece: Piece) -> Future:
        """The future of the piece's `(JetArrays, skipped)`."""
        return self.executor.submit(self.load, piece)

    def load(self, piece: Piece) -> tuple[JetArrays, Counter]:
        return self.builder.build(*self.read(piece))

    def read(self, piece: Piece) -> tuple[Chunk, ReadPlan]:
        open_file, plan, branches = self.open(piece.file)
        chunk = open_file.read(branches, piece.start, piece.stop)
        ids = np.arange(piece.start, piece.stop, dtype=np.int64) + self.offsets[piece.file]
        chunk.arrays = ak.with_field(chunk.arrays, ids, JET_ID)
        return chunk, plan

    def open(self, index: int) -> tuple[JetFile, ReadPlan, list[str]]:
        if index in self.files:
            self.files.move_to_end(index)
            return self.files[index]
        while len(self.files) >= OPEN_FILES:
            self.files.popitem(last=False)[1][0].close()
            self.closed += 1
            # uproot's file objects hold reference cycles: only the cycle collector frees them.
            # JetFile.close collects the young generation, but a file kept open while others were
            # opened and closed (by this reader or the other) has its objects in the old one: they
            # are collected here, at once while the rest of the process is frozen (`_freeze_gc`),
            # else every GC_EVERY files (a full pass then takes 0.2-0.3 s with PyTorch loaded).
            if _FROZEN["ours"] or self.closed % GC_EVERY == 0:
                gc.collect()
        stream, info = self.stream, self.stream.files[index]
        open_file = JetFile(info.path, stream.treename, info.label)
        try:
            plan = stream.builder.plan(open_file)
        except BaseException:
            open_file.close()
            raise
        branches = plan.all_branches(stream.builder.rename)
        plan.observers.append(JET_ID)
        self.files[index] = (open_file, plan, branches)
        return self.files[index]

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        for open_file, _, _ in self.files.values():
            open_file.close()
        self.files.clear()


class _Pool:
    """The shuffle buffer: the pieces as read, and which of their jets wait, in which order.

    Jets are not copied into one array when pieces come in or batches go out: a batch gathers its
    jets from the pieces they sit in. A piece is freed when its last jet has gone, and the few jets
    left of a mostly used piece are moved into a small new one, so that memory stays within a small
    multiple of the buffer.
    """

    def __init__(self):
        self.parts: list[JetArrays | None] = []
        self.live: list[int] = []
        self.starts: list[np.ndarray | None] = []  # first particle row of each jet of each piece
        # the features and vectors of each piece as rows with a zero row after the last (rows_with_zero)
        self.sources: list[tuple[np.ndarray, np.ndarray] | None] = []
        self.part = np.zeros(0, dtype=np.int64)  # piece of each waiting jet
        self.local = np.zeros(0, dtype=np.int64)  # its index in the piece

    def __len__(self) -> int:
        return len(self.part)

    def add(self, jets: JetArrays) -> None:
        self.part = np.concatenate([self.part, np.full(len(jets), len(self.parts), dtype=np.int64)])
        self.local = np.concatenate([self.local, np.arange(len(jets), dtype=np.int64)])
        self._append(jets)

    def _append(self, jets: JetArrays) -> None:
        self.parts.append(jets)
        self.starts.append(np.cumsum(jets.counts) - jets.counts)
        self.sources.append((rows_with_zero(jets.features), rows_with_zero(jets.vectors)))
        self.live.append(len(jets))

    def shuffle(self, rng: np.random.Generator) -> None:
        order = rng.permutation(len(self))
        self.part, self.local = self.part[order], self.local[order]

    def batch(self, positions: np.ndarray) -> dict[str, torch.Tensor]:
        """The padded batch of the jets at `positions` (grouped by piece, as `gather` orders them).

        The same dict as `JetDataset(self.gather(positions))[...]` with the jet ids as `index`, but
        built straight from the pieces: the jets of one piece fill a contiguous block of the padded
        tensors, gathered in one `np.take` per piece, padding slots taking the piece's zero row
        (`rows_with_zero`), so that every value is written once and nothing is zero-filled first.
        """
        part, local = self.part[positions], self.local[positions]
        order = np.argsort(part, kind="stable")
        part, local = part[order], local[order]
        pieces, firsts = np.unique(part, return_index=True)
        ends = [*firsts[1:].tolist(), len(part)]
        size = len(part)
        counts = np.empty(size, dtype=np.int64)
        starts = np.empty(size, dtype=np.int64)
        labels = np.empty(size, dtype=np.int64)
        ids = np.empty(size, dtype=np.int64)
        for p, a, b in zip(pieces.tolist(), firsts.tolist(), ends, strict=True):
            jets, at = self.parts[p], local[a:b]
            counts[a:b] = jets.counts[at]
            starts[a:b] = self.starts[p][at]
            labels[a:b] = jets.labels[at]
            ids[a:b] = jets.observers[JET_ID][at]
        length = max(int(counts.max()), 1)
        mask = np.arange(length) < counts[:, None]
        channels = self.parts[pieces[0]].features.shape[1]
        x = np.empty((size, length, channels), dtype=np.float32)
        v = np.empty((size, length, 4), dtype=np.float32)
        # Particles are moved whole, as one opaque item of `channels` (or 4) float32 each: numpy then
        # copies rows instead of single numbers, several times faster than fancy indexing on floats.
        x_rows, v_rows = as_rows(x.reshape(-1, channels)), as_rows(v.reshape(-1, 4))
        for p, a, b in zip(pieces.tolist(), firsts.tolist(), ends, strict=True):
            features, vectors = self.sources[p]
            rows = padding_rows(starts[a:b], counts[a:b], length, zero=len(features) - 1)
            # mode="clip" (the rows are in range): with the default "raise", `out` is buffered
            np.take(features, rows, out=x_rows[a * length : b * length], mode="clip")
            np.take(vectors, rows, out=v_rows[a * length : b * length], mode="clip")
        return {
            "x": torch.from_numpy(x),
            "v": torch.from_numpy(v),
            "mask": torch.from_numpy(mask),
            "y": torch.from_numpy(labels),
            "index": torch.from_numpy(ids),
        }

    def gather(self, positions: np.ndarray) -> JetArrays:
        """The jets at `positions` of the buffer (grouped by piece within the batch)."""
        part, local = self.part[positions], self.local[positions]
        return JetArrays.gather([(self.parts[p], local[part == p]) for p in np.unique(part)])

    def drop_front(self, n: int) -> None:
        """Forget the first `n` waiting jets (batched); free or compact the pieces they leave."""
        if n == 0:
            return
        gone = np.bincount(self.part[:n], minlength=len(self.parts))
        self.part, self.local = self.part[n:], self.local[n:]
        sparse = []
        for p in np.flatnonzero(gone):
            self.live[p] -= int(gone[p])
            if self.live[p] == 0:
                self.parts[p] = self.starts[p] = self.sources[p] = None
            elif 3 * self.live[p] < len(self.parts[p]):
                sparse.append(p)
        if sparse:
            moved = np.flatnonzero(np.isin(self.part, sparse))
            moved = moved[np.argsort(self.part[moved], kind="stable")]
            new = len(self.parts)
            compact = self.gather(moved)  # gather groups by piece: the same order as `moved`
            self._append(compact)
            self.part[moved], self.local[moved] = new, np.arange(len(moved))
            for p in sparse:
                self.parts[p], self.starts[p], self.sources[p], self.live[p] = None, None, None, 0


class JetStreamLoader(DataLoader):
    """A DataLoader over a `JetStream` that moves the epoch on and gathers the workers' skip counts.

    Workers are started afresh every epoch (not persistent), so that each gets the new epoch number.
    """

    def __init__(self, stream: JetStream, num_workers: int = 0, **kwargs):
        stream.num_workers = max(num_workers, 1)
        super().__init__(stream, batch_size=None, num_workers=num_workers, persistent_workers=False, **kwargs)
        self.epoch = 0
        self.skipped: Counter = Counter()
        self.jets = 0

    def __iter__(self):
        stream: JetStream = self.dataset
        if stream.rank is None or stream.world_size is None:
            # read here, in the main process, and handed to the workers with the dataset
            stream.rank, stream.world_size = distributed_rank()
        stream.set_epoch(self.epoch)
        self.epoch += 1
        self.skipped, self.jets = Counter(), 0  # of the current (or last) epoch
        for batch in super().__iter__():
            self.skipped.update(batch.pop("skipped", {}))
            self.jets += len(batch["y"])
            yield batch
