"""The batch every model input goes through: `JetBatch`, and the one function that pads jets into it.

Jets arrive flat (`JetArrays`: one row per particle, particles per jet in `counts`); a batch is padded
only to its longest jet. Both the in-memory dataset and the streaming shuffle buffer make their
batches with `pad_jets`, from one or several blocks of rows; tasks, inference and export read the
fields by name (`batch.x`, `batch.inputs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from jettag.data.arrays import as_rows, padding_rows


@dataclass
class JetBatch:
    """B jets padded to N particles.

    x      (B, N, C) float32  standardized particle features, in the order of the feature set
    v      (B, N, 4) float32  particle four-momenta (px, py, pz, E) in GeV
    mask   (B, N)    bool     True for a real particle; padding is zero in x and v
    y      (B,)      int64    class index
    weight (B,)      float32  per-jet weight (1 unless a task sets one)
    entry  (B,)      int64    the jet's entry number in the chain of its split's files (as a TChain
                              numbers them: the file's offset plus the entry in the file): unique per
                              jet, so predictions can be put back in file order and deduplicated
    skipped                   streaming only, on a worker's last batch of an epoch: the jets it skipped
                              (reason -> count); `JetStreamLoader` takes it out
    worker                    streaming only: the loader worker that made the batch, so that a run resumed
                              mid-epoch has each worker skip the batches it had handed out
    """

    x: torch.Tensor
    v: torch.Tensor
    mask: torch.Tensor
    y: torch.Tensor
    weight: torch.Tensor
    entry: torch.Tensor
    skipped: dict | None = None
    worker: int | None = None

    def __len__(self) -> int:
        return len(self.y)

    @property
    def inputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What every model takes: (x, v, mask)."""
        return self.x, self.v, self.mask

    def _tensors(self) -> dict[str, torch.Tensor]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {name: value for name, value in values.items() if isinstance(value, torch.Tensor)}

    def to(self, device, non_blocking: bool = False) -> JetBatch:
        """The batch on `device` (Lightning moves batches with this)."""
        return replace(
            self, **{k: t.to(device, non_blocking=non_blocking) for k, t in self._tensors().items()}
        )

    def pin_memory(self) -> JetBatch:
        """Page-locked copies, for DataLoader(pin_memory=True)."""
        return replace(self, **{k: t.pin_memory() for k, t in self._tensors().items()})


@dataclass(frozen=True)
class RowBlock:
    """Jets whose particles are rows of `features` and `vectors` (opaque rows, the last one all zeros,
    as `rows_with_zero` gives them), each jet from row `starts[i]`, `counts[i]` particles long."""

    features: np.ndarray
    vectors: np.ndarray
    starts: np.ndarray
    counts: np.ndarray


def pad_jets(
    blocks: Sequence[RowBlock],
    labels: np.ndarray,
    entries: np.ndarray,
    channels: int,
    weights: np.ndarray | None = None,
) -> JetBatch:
    """The padded batch of the jets of `blocks`, block after block, padded to the longest jet.

    Every value is written once: the jets of a block fill a contiguous part of the padded arrays in one
    `np.take` of whole particle rows (several times faster than fancy indexing on floats), padding slots
    taking the block's zero row, so nothing is zero-filled first.
    """
    size = sum(len(b.counts) for b in blocks)
    length = max(max((int(b.counts.max()) for b in blocks if len(b.counts)), default=1), 1)
    x = np.empty((size, length, channels), dtype=np.float32)
    v = np.empty((size, length, 4), dtype=np.float32)
    x_rows, v_rows = as_rows(x.reshape(-1, channels)), as_rows(v.reshape(-1, 4))
    counts = np.empty(size, dtype=np.int64)
    at = 0
    for block in blocks:
        n = len(block.counts)
        rows = padding_rows(block.starts, block.counts, length, zero=len(block.features) - 1)
        # mode="clip" (the rows are in range): with the default "raise", `out` is buffered
        np.take(block.features, rows, out=x_rows[at * length : (at + n) * length], mode="clip")
        np.take(block.vectors, rows, out=v_rows[at * length : (at + n) * length], mode="clip")
        counts[at : at + n] = block.counts
        at += n
    weights = np.ones(size, dtype=np.float32) if weights is None else np.asarray(weights, dtype=np.float32)
    return JetBatch(
        x=torch.from_numpy(x),
        v=torch.from_numpy(v),
        mask=torch.from_numpy(np.arange(length) < counts[:, None]),
        y=torch.from_numpy(np.asarray(labels, dtype=np.int64)),
        weight=torch.from_numpy(weights),
        entry=torch.from_numpy(np.asarray(entries, dtype=np.int64)),
    )
