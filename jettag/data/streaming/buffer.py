"""The shuffle buffer of a stream: pieces of jets as read, and which of their jets wait, in which order."""

from __future__ import annotations

import numpy as np

from jettag.data.arrays import JetArrays, rows_with_zero
from jettag.data.batch import JetBatch, RowBlock, pad_jets


class ShuffleBuffer:
    """Jets waiting to be batched, kept in the pieces they came in.

    Jets are not copied into one array when pieces come in or batches go out: a batch gathers its
    jets from the pieces they sit in (`pad_jets`, one block per piece). A piece is freed when its last
    jet has gone, and the few jets left of a mostly used piece are moved into a small new one, so that
    memory stays within a small multiple of the buffer.
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

    def _by_piece(self, positions: np.ndarray):
        """(piece, indices in it) of the jets at `positions`, grouped by piece (the batch's order)."""
        part, local = self.part[positions], self.local[positions]
        order = np.argsort(part, kind="stable")
        part, local = part[order], local[order]
        pieces, firsts = np.unique(part, return_index=True)
        ends = [*firsts[1:].tolist(), len(part)]
        return [(p, local[a:b]) for p, a, b in zip(pieces.tolist(), firsts.tolist(), ends, strict=True)]

    def batch(self, positions: np.ndarray) -> JetBatch:
        """The padded batch of the jets at `positions`, grouped by piece (as `gather` orders them)."""
        groups = self._by_piece(positions)
        blocks = [
            RowBlock(*self.sources[p], self.starts[p][at], self.parts[p].counts[at]) for p, at in groups
        ]
        labels = np.concatenate([self.parts[p].labels[at] for p, at in groups])
        entries = np.concatenate([self.parts[p].entries[at] for p, at in groups])
        return pad_jets(blocks, labels, entries, self.parts[groups[0][0]].features.shape[1])

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
