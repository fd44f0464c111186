"""Jets in memory, padded batch by batch into `JetBatch`es, and the sampler that draws the batches.

A batch is padded only to the longest jet it contains, not to `max_particles`: padding costs
compute in every attention block, and the models give the same scores either way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from jettag.data.arrays import JetArrays, rows_with_zero
from jettag.data.batch import JetBatch, RowBlock, pad_jets


class JetDataset(Dataset):
    """Indexed by a list of jet indices, it returns a whole padded `JetBatch`.

    Use it with `batch_size=None` and a batch sampler (see `JetDataModule`).
    """

    def __init__(self, jets: JetArrays):
        self.jets = jets
        self._features = np.ascontiguousarray(jets.features, dtype=np.float32)
        self._vectors = np.ascontiguousarray(jets.vectors, dtype=np.float32)
        # as rows with a zero row after the last, for padding by gathering (no copy for the arrays
        # JetBuilder and JetArrays.concatenate make)
        self._feature_rows = rows_with_zero(self._features)
        self._vector_rows = rows_with_zero(self._vectors)
        self.features = torch.from_numpy(self._features)
        self.vectors = torch.from_numpy(self._vectors)
        self.counts = np.asarray(jets.counts, dtype=np.int64)
        self.offsets = np.cumsum(self.counts) - self.counts
        self.labels = torch.from_numpy(np.asarray(jets.labels, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.counts)

    def __getitem__(self, index) -> JetBatch:
        index = np.atleast_1d(np.asarray(index, dtype=np.int64))
        block = RowBlock(self._feature_rows, self._vector_rows, self.offsets[index], self.counts[index])
        return pad_jets([block], self.jets.labels[index], self.jets.entries[index], self._features.shape[1])


def torch_world() -> tuple[int, int]:
    """(rank, world size) of torch.distributed, (0, 1) when it is not running."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class JetBatchSampler(Sampler[list[int]]):
    """Batches of jet indices, optionally shuffled and grouped by particle multiplicity.

    With `group_by_length`, jets are shuffled, then sorted by multiplicity within windows of
    `group_window` batches, cut into batches and the batches shuffled again: batches hold jets of
    similar size (less padding) while every epoch still sees a new random order. Without
    shuffling (evaluation) it orders all jets by multiplicity.

    Multiplicity tells classes apart (top jets have more particles than QCD jets), so plain
    grouping makes training batches nearly single-class, and BatchNorm's batch statistics then
    carry the label: training suffers badly. Given `labels`, training batches are grouped by the
    *quantile* of a jet's multiplicity within its own class instead: each batch keeps the class
    mix of the data set and still holds jets of similar size for their class.

    With sampling `weights` (0..1, from `data.reweight`), each epoch keeps every jet with a
    probability equal to its weight, drawn anew each epoch.
    """

    def __init__(
        self,
        counts: Sequence[int],
        batch_size: int,
        shuffle: bool,
        drop_last: bool = False,
        group_by_length: bool = False,
        group_window: int = 50,
        seed: int = 0,
        labels: Sequence[int] | None = None,
        weights: Sequence[float] | None = None,
    ):
        self.counts = np.asarray(counts)
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64)
        self.labels = None if labels is None else np.asarray(labels)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.group_by_length = group_by_length
        self.group_window = group_window
        self.seed = seed
        self.epoch = 0
        self.skip = 0  # batches of the next epoch already seen (a run resumed mid-epoch), see `shard`

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.counts) if self.weights is None or not self.shuffle else round(self.weights.sum())
        total = n // self.batch_size if self.drop_last else -(-n // self.batch_size)
        return -(-total // torch_world()[1])

    def shard(self, batches: list) -> list:
        """This process's share of the epoch's batches under torch.distributed, minus `skip` already seen.

        Every process gets the same number of batches (DDP steps together): the list is padded by
        repeating its first batches, so a few jets are seen twice in evaluation; `JetClassifier` keeps
        one score per jet index. All processes draw the same order (same seed and epoch).
        """
        rank, world = torch_world()
        if world > 1 and batches:
            per_rank = -(-len(batches) // world)
            batches = (batches * world)[: per_rank * world][rank::world]
        skip, self.skip = self.skip, 0
        return batches[skip:]

    def __iter__(self) -> Iterator[list[int]]:
        n = len(self.counts)
        if not self.shuffle:
            # Evaluation: sorting by multiplicity minimizes padding; batches carry each jet's index.
            order = np.argsort(-self.counts, kind="stable") if self.group_by_length else np.arange(n)
        else:
            rng = np.random.default_rng((self.seed, self.epoch))
            self.epoch += 1
            order = rng.permutation(n)
            if self.weights is not None:
                order = order[rng.random(n) < self.weights[order]]
                n = len(order)
            if self.group_by_length:
                window = self.batch_size * self.group_window
                for start in range(0, n, window):
                    part = order[start : start + window]
                    order[start : start + window] = part[np.argsort(-self._size_key(part), kind="stable")]
        batches = [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.shuffle and self.group_by_length:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        for b in self.shard(batches):
            yield b.tolist()

    def _size_key(self, part: np.ndarray) -> np.ndarray:
        """Multiplicity, or with labels its quantile within the jet's class (ties broken by order)."""
        counts = self.counts[part]
        if self.labels is None:
            return counts.astype(np.float64)
        key = np.empty(len(part))
        labels = self.labels[part]
        for label in np.unique(labels):
            members = np.flatnonzero(labels == label)
            rank = np.empty(len(members))
            rank[np.argsort(counts[members], kind="stable")] = np.arange(len(members))
            key[members] = (rank + 0.5) / len(members)
        return key
