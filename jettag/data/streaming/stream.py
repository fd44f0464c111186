"""`JetStream`: padded batches streamed from many files, each jet once per epoch; `JetStreamLoader`."""

from __future__ import annotations

import logging
import math
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from jettag.data.arrays import JetArrays
from jettag.data.batch import JetBatch
from jettag.data.memory import keep_freed_memory
from jettag.data.source import JetSource
from jettag.data.streaming.buffer import ShuffleBuffer
from jettag.data.streaming.readers import READERS, PieceReader, freeze_gc, unfreeze_gc
from jettag.data.streaming.sharding import Piece, cut_shares, distributed_rank, file_pieces
from jettag.errors import DataError, JetTagError

log = logging.getLogger(__name__)

PREFETCH = 3  # pieces in flight ahead of batching (being read and built)


class JetStream(IterableDataset):
    """Padded `JetBatch`es streamed from the files of `source` (see the package docstring)."""

    def __init__(
        self,
        source: JetSource,
        batch_size: int,
        shuffle: bool,
        shuffle_buffer: int = 100_000,
        seed: int = 0,
        weights=None,  # a fitted `Reweighting`: jets are kept with probability = their weight
        rank: int | None = None,
        world_size: int | None = None,
    ):
        self.source = source
        self.files = source.files
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.shuffle_buffer = max(shuffle_buffer, batch_size) if shuffle else batch_size
        self.seed = seed
        self.weights = weights
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.num_workers = 1  # set by the loader, for __len__
        # batches of epoch `skip_epoch` already trained on, by loader worker (a run resumed mid-epoch):
        # each worker makes its batches as before and does not hand out the first ones. Under DDP every
        # rank has trained on as many batches, taken from its workers in turn, so the counts of one
        # rank are those of every rank.
        self.skip: dict[int, int] = {}
        self.skip_epoch: int | None = None

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
        return file_pieces([f.bounds for f in self.files], self.seed, epoch, self.shuffle)

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

    def __iter__(self) -> Iterator[JetBatch]:
        if get_worker_info() is None:
            yield from self._batches()
            return
        try:
            yield from self._batches()
        except JetTagError as err:
            # handed to the main process as data: an exception raised here would reach it wrapped in
            # the worker's traceback (torch's ExceptionWrapper), no longer one sentence
            yield WorkerError(type(err), str(err))

    def _batches(self) -> Iterator[JetBatch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rank, world = self._ranks()
        share = rank * workers + worker
        epoch = self.epoch
        pieces = cut_shares(self.pieces(epoch), world * workers)[share]
        target = self.batches_per_share(workers, world) if world > 1 else None
        rng = np.random.default_rng((self.seed, epoch, share, 1))
        done = self.skip.get(worker, 0) if epoch == self.skip_epoch else 0  # batches already trained on
        if done > min((self.skip.get(w, 0) for w in range(workers)), default=0):
            # the loader takes one batch from each worker in turn, starting with worker 0: a worker that
            # was a turn ahead when the run stopped passes this turn, so the order goes on as it was
            yield JetBatch(None, None, None, None, None, None)
        skipped: Counter = Counter()
        pool = ShuffleBuffer()
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
                if emitted + i >= done:
                    yield self._labelled(pool.batch(np.arange(i * size, (i + 1) * size)), worker)
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
            last = i == len(bounds) - 1
            if emitted + i < done and not last:
                continue
            batch = pool.batch(order[a:b])
            if last:
                batch.skipped = dict(skipped)  # the loader sums these over workers
                if emitted + i < done:  # already trained on: only the counts travel
                    batch.worker, batch.x = worker, None
                    yield batch
                    return
            yield self._labelled(batch, worker)

    @staticmethod
    def _labelled(batch: JetBatch, worker: int) -> JetBatch:
        batch.worker = worker
        return batch

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
        readers = [PieceReader(self.source, f"jettag-read{i}") for i in range(READERS)]
        submitted = 0

        def submit(piece: Piece) -> Future:
            nonlocal submitted
            reader = readers[submitted % len(readers)]
            submitted += 1
            return reader.submit(piece)

        ahead: deque[Future] = deque()
        freeze_gc()
        try:
            ahead.extend(submit(piece) for piece in pieces[:PREFETCH])
            for i, piece in enumerate(pieces):
                future = ahead.popleft()
                if i + PREFETCH < len(pieces):
                    ahead.append(submit(pieces[i + PREFETCH]))
                try:
                    jets, chunk_skipped = future.result()
                except DataError as err:
                    if not self.source.skip_bad_files:
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
            unfreeze_gc()


@dataclass(frozen=True)
class WorkerError:
    """A `JetTagError` met in a loader worker, raised again by `JetStreamLoader` in the main process."""

    kind: type
    message: str


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

    def __iter__(self) -> Iterator[JetBatch]:
        stream: JetStream = self.dataset
        if stream.rank is None or stream.world_size is None:
            # read here, in the main process, and handed to the workers with the dataset
            stream.rank, stream.world_size = distributed_rank()
        stream.set_epoch(self.epoch)
        self.epoch += 1
        self.skipped, self.jets = Counter(), 0  # of the current (or last) epoch
        for batch in super().__iter__():
            if isinstance(batch, WorkerError):
                raise batch.kind(batch.message)
            if batch.skipped is not None:
                self.skipped.update(batch.skipped)
                batch.skipped = None
            if (
                batch.x is None
            ):  # a turn passed, or a share's last batch trained on before the run was resumed
                continue
            self.jets += len(batch)
            yield batch
