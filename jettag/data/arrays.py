"""Jets kept flat: `JetArrays` (one row per particle, particles per jet in `counts`), and the row helpers
that pad batches from it by gathering whole particles.

Flat rows are the layout that is cheapest to store and to pad batch by batch: a batch copies each of its
particles once, as one opaque row of C float32 values, and every padding slot takes a zero row kept after
the last particle (`rows_with_zero`), so nothing is zero-filled first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


def row_type(channels: int) -> np.dtype:
    """One particle's `channels` float32 values as a single opaque item."""
    return np.dtype((np.void, 4 * channels))


def as_rows(array: np.ndarray) -> np.ndarray:
    """A (n, C) float32 array seen as n opaque items of 4 C bytes (a view when contiguous).

    Gathering particles this way copies whole rows instead of single numbers: several times
    faster than fancy indexing on the float array, with the same result.
    """
    array = np.ascontiguousarray(array, dtype=np.float32)
    return array.view(row_type(array.shape[1])).reshape(len(array))


@dataclass
class JetArrays:
    features: np.ndarray  # (particles, C) float32, standardized
    vectors: np.ndarray  # (particles, 4) float32: px, py, pz, E
    counts: np.ndarray  # (jets,) particles per jet after truncation
    labels: np.ndarray  # (jets,) class index
    truth: dict[str, np.ndarray] = field(default_factory=dict)  # label branches as read
    observers: dict[str, np.ndarray] = field(default_factory=dict)
    # (jets,) entry number in the chain of the files read (file offset + entry in the file); by
    # default 0, 1, 2, ... (jets not read from files)
    entries: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.entries is None:
            self.entries = np.arange(len(self.counts), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.counts)

    @classmethod
    def concatenate(cls, parts: Sequence[JetArrays]) -> JetArrays:
        first = parts[0]
        return cls(
            features=_concatenate_rows([p.features for p in parts]),
            vectors=_concatenate_rows([p.vectors for p in parts]),
            counts=np.concatenate([p.counts for p in parts]),
            labels=np.concatenate([p.labels for p in parts]),
            truth={k: np.concatenate([p.truth[k] for p in parts]) for k in first.truth},
            observers={k: np.concatenate([p.observers[k] for p in parts]) for k in first.observers},
            entries=np.concatenate([p.entries for p in parts]),
        )

    def take(self, index: np.ndarray) -> JetArrays:
        """The jets at `index` (in that order), particles and all."""
        return JetArrays.gather([(self, index)])

    @classmethod
    def gather(cls, selections: Sequence[tuple[JetArrays, np.ndarray]]) -> JetArrays:
        """The jets at `index` of each `(jets, index)`, one selection after the other, in one array.

        Every particle is copied once, row by row, into features and vectors that have a zero row
        after the last (`rows_with_zero`), so that batches can be padded from them directly.
        """
        selections = [(jets, np.asarray(index, dtype=np.int64)) for jets, index in selections]
        counts = [jets.counts[index] for jets, index in selections]
        total = int(sum(int(c.sum()) for c in counts))
        first = selections[0][0]
        features = zero_row_buffer(total, first.features.shape[1])
        vectors = zero_row_buffer(total, first.vectors.shape[1])
        at = 0
        for (jets, index), n in zip(selections, counts, strict=True):
            rows = np.repeat((np.cumsum(jets.counts) - jets.counts)[index] - (np.cumsum(n) - n), n)
            rows += np.arange(len(rows))
            _take_rows_into(jets.features, rows, features[at : at + len(rows)])
            _take_rows_into(jets.vectors, rows, vectors[at : at + len(rows)])
            at += len(rows)

        def joined(values):
            return values[0] if len(values) == 1 else np.concatenate(values)

        return cls(
            features[:total],
            vectors[:total],
            joined(counts),
            joined([jets.labels[index] for jets, index in selections]),
            {k: joined([jets.truth[k][index] for jets, index in selections]) for k in first.truth},
            {k: joined([jets.observers[k][index] for jets, index in selections]) for k in first.observers},
            joined([jets.entries[index] for jets, index in selections]),
        )


def zero_row_buffer(rows: int, channels: int) -> np.ndarray:
    """An uninitialized (rows + 1, channels) float32 array whose last row is zeros."""
    out = np.empty((rows + 1, channels), dtype=np.float32)
    out[rows] = 0
    return out


def _concatenate_rows(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """`np.concatenate` of (n, C) arrays into a buffer with a zero row after the last."""
    total = sum(len(a) for a in arrays)
    out = zero_row_buffer(total, arrays[0].shape[1])
    np.concatenate(arrays, out=out[:total])
    return out[:total]


def padding_rows(starts: np.ndarray, counts: np.ndarray, length: int, zero: int) -> np.ndarray:
    """The source row of every slot of a (jets, length) padded block, flattened: each jet's
    particles from its first row `starts`, then the `zero` row (`rows_with_zero`) for its padding.
    Gathering with it (`np.take`) fills a padded batch in one pass, every value written once."""
    slot = np.arange(length)
    return np.where(slot < counts[:, None], starts[:, None] + slot, zero).ravel()


def _take_rows_into(array: np.ndarray, rows: np.ndarray, out: np.ndarray) -> None:
    """`out[...] = array[rows]` for (n, C) float32 arrays, row by row."""
    if array.dtype != np.float32 or array.shape[1] == 0 or not out.flags.c_contiguous:
        out[...] = array[rows]
        return
    # mode="clip" (the rows are in range): with the default "raise", `out` is buffered
    np.take(as_rows(array), rows, out=as_rows(out), mode="clip")


def rows_with_zero(array: np.ndarray) -> np.ndarray:
    """The (n, C) float32 `array` as n + 1 opaque rows (`as_rows`), the last one all zeros.

    Free for the arrays `JetBuilder` makes (a view of a buffer that has the zero row after the
    last); other arrays are copied once with a zero row appended.
    """
    base = array.base
    if (
        isinstance(base, np.ndarray)
        and base.dtype == np.float32
        and base.shape == (len(array) + 1, array.shape[1])
        and base.flags.c_contiguous
        and array.ctypes.data == base.ctypes.data
        and not base[-1].any()
    ):
        return as_rows(base)
    return as_rows(np.concatenate([array, np.zeros((1, array.shape[1]), np.float32)]))
