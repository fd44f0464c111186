"""Jets of a batch sorted by multiplicity, cut into buckets, their real particles packed as tokens.

Attention costs ~ n^2 per jet padded to n particles, so ParT does not run a batch padded to its
longest jet: `Layout` sorts the jets by decreasing multiplicity (real particles first, in their
order), trims the padding, and cuts them into a few buckets (`plan_buckets`), each padded only
to its own longest jet for attention. The token-wise layers work either on each bucket padded
(`packed=False`, inference on batches grouped by multiplicity) or on the packed real particles
(`Packing`: training, where the backward pass then skips all padding, and inference on batches
that would pad much, `PACK_ABOVE`). Scores depend on none of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Bucket:
    """Jets start:stop of a batch sorted by multiplicity, run through the blocks padded to `length`."""

    start: int
    stop: int
    length: int
    num_pairs: int  # real pairs i >= j of these jets


# Relative costs for choosing buckets, in units of one attention-score entry: the linear layers of
# one particle ~256, a further bucket ~8k in training (packed tokens) and ~64k at inference (each
# bucket through the blocks on its own). Measured on a 2-core CPU; only the choice depends on them.
TOKEN_COST = 256
BUCKET_COST = {True: 8 * 1024, False: 64 * 1024}


# Inference packs the tokens when the padded buckets would hold this many times the real particles
# (batches grouped by multiplicity hold ~1.05, random batches ~1.2; packing costs ~5% in copies).
PACK_ABOVE = 1.08


def plan_buckets(counts: Sequence[int], packed: bool, min_jets: int = 4) -> list[Bucket]:
    """Buckets of jets sorted by decreasing multiplicity: 1, 2, 4, 8 or 16 equal ones, the cheapest.

    Attention costs ~ n^2 per jet of a bucket padded to length n. The token-wise layers cost ~ n
    per jet when each bucket runs through the blocks padded, and do not depend on the buckets when
    they work on packed tokens (`packed`, used in training; attention then pads each bucket).
    """
    total = len(counts)
    best: tuple[float, list[tuple[int, int]]] | None = None
    for groups in (1, 2, 4, 8, 16):
        size = -(-total // groups)
        if groups > 1 and size < min_jets:
            break
        bounds = [(start, min(start + size, total)) for start in range(0, total, size)]
        cost = BUCKET_COST[packed] * len(bounds)
        for start, stop in bounds:
            cost += (stop - start) * (counts[start] ** 2 + (0 if packed else TOKEN_COST * counts[start]))
        if best is None or cost < best[0]:
            best = (cost, bounds)
    pairs = [n * (n + 1) // 2 for n in counts]
    return [Bucket(start, stop, max(counts[start], 1), sum(pairs[start:stop])) for start, stop in best[1]]


class Packing:
    """Real particles stored jet after jet as tokens (T, C); each bucket laid out padded (b, n, C) for attention.

    Jets are sorted by decreasing multiplicity with real particles first, so the tokens of a bucket
    are one contiguous range; `slots` are their positions in the bucket's padded layout.
    """

    def __init__(self, counts: Sequence[int], buckets: Sequence[Bucket], device: torch.device):
        self.buckets = list(buckets)
        self.ranges: list[tuple[int, int]] = []
        self.slots: list[torch.Tensor | None] = []
        first = 0
        for bucket in self.buckets:
            jet_counts = counts[bucket.start : bucket.stop]
            tokens = sum(jet_counts)
            self.ranges.append((first, first + tokens))
            first += tokens
            if tokens == len(jet_counts) * bucket.length:  # no padding in this bucket
                self.slots.append(None)
                continue
            n = torch.tensor(jet_counts, device=device)
            rows = torch.repeat_interleave(torch.arange(len(jet_counts), device=device), n)
            columns = torch.arange(tokens, device=device) - torch.repeat_interleave(torch.cumsum(n, 0) - n, n)
            self.slots.append(rows * bucket.length + columns)

    def pad(self, tokens: torch.Tensor, k: int) -> torch.Tensor:
        """Bucket k's tokens (T, C) -> (b, n, C), zeros at padded positions."""
        bucket, (first, last) = self.buckets[k], self.ranges[k]
        shape = (bucket.stop - bucket.start, bucket.length, tokens.shape[-1])
        if self.slots[k] is None:
            return tokens[first:last].view(shape)
        padded = tokens.new_zeros(shape[0] * shape[1], shape[2])
        return padded.index_copy(0, self.slots[k], tokens[first:last]).view(shape)

    def unpad(self, padded: torch.Tensor, k: int) -> torch.Tensor:
        """(b, n, C) -> the real positions' rows (T_k, C)."""
        flat = padded.reshape(-1, padded.shape[-1])
        return flat if self.slots[k] is None else flat.index_select(0, self.slots[k])


def padding_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 for real particles, -inf for padding: the additive key mask."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))


def sorted_and_trimmed(x: torch.Tensor, v: torch.Tensor, mask: torch.Tensor):
    """Jets by decreasing multiplicity, real particles first (in their order), padding cut to the longest jet.

    Returns x, v, mask and the order of the jets (None if unchanged). Scores do not depend on
    either reordering; keeping the particle order keeps the pair features bit for bit.
    """
    counts = mask.sum(1)
    length = max(int(counts.max()), 1) if mask.numel() else 1
    positions = torch.arange(mask.shape[1], device=mask.device)
    if not torch.equal(mask, positions < counts[:, None]):  # padding in between: move it to the end
        index = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices
        x, v, mask = (t.gather(1, index[..., None].expand_as(t)) for t in (x, v, mask[..., None]))
        mask = mask[..., 0]
    order = torch.sort(counts, descending=True, stable=True).indices
    if torch.equal(order, torch.arange(len(order), device=order.device)):
        order = None
    else:
        x, v, mask = x[order], v[order], mask[order]
    return x[:, :length], v[:, :length], mask[:, :length], order


class Layout:
    """A batch sorted and trimmed (`x`, `v`, `mask`), its buckets and packing, and the way back.

    `packed`: whether the token-wise layers work on packed tokens; None chooses as inference
    does (packed when the padded buckets would hold more than PACK_ABOVE times the real particles).
    """

    def __init__(self, x: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, packed: bool | None):
        self.x, self.v, self.mask, self.order = sorted_and_trimmed(x, v, mask)
        self.counts = self.mask.sum(1).tolist()
        buckets = plan_buckets(self.counts, bool(packed))
        if packed is None:
            padded = sum((k.stop - k.start) * k.length for k in buckets)
            packed = padded > PACK_ABOVE * sum(self.counts)
            if packed:
                buckets = plan_buckets(self.counts, True)
        self.packed = packed
        self.buckets = buckets
        self.packing = Packing(self.counts, buckets, self.mask.device)

    def bucket_masks(self, dtype: torch.dtype, class_token: bool = False) -> list[torch.Tensor]:
        """The additive padding mask (b, 1, 1, n) of each bucket; with the class token, (b, 1, 1, 1 + n)."""
        masks = []
        for k in self.buckets:
            mask = self.mask[k.start : k.stop, : k.length]
            if class_token:
                mask = F.pad(mask, (1, 0), value=True)
            masks.append(padding_mask(mask, dtype)[:, None, None, :])
        return masks

    def jets_back(self, per_jet: torch.Tensor) -> torch.Tensor:
        """(B, ...) in the sorted order -> the caller's order of jets."""
        return per_jet if self.order is None else per_jet[torch.argsort(self.order)]

    def tokens_back(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Packed tokens (T, D) -> (B, N, D) in the caller's layout (`mask` as given), zeros at padding."""
        # the tokens' row-major order is that of the real particles of the sorted jets, and sorting
        # kept the particle order within each jet
        if self.order is not None:
            jets = torch.repeat_interleave(self.order, torch.as_tensor(self.counts, device=tokens.device))
            tokens = tokens[torch.argsort(jets, stable=True)]
        out = tokens.new_zeros(*mask.shape, tokens.shape[-1])  # (B, N, D)
        out[mask] = tokens
        return out
