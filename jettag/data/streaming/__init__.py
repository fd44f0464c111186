"""Streaming jets from many files: sharded over DataLoader workers and DDP ranks, shuffled, batched.

`JetStream` (`stream.py`) is an `IterableDataset` that yields padded `JetBatch`es. Within an epoch
every jet is read once by exactly one worker of one rank:

1. The files (a `JetSource`, scanned once) are cut into pieces of about `data.piece_size` entries on
   basket / row-group boundaries; each epoch the pieces get a random order drawn from `(seed, epoch)`
   and the stream of entries is cut into one contiguous share per worker and rank (`sharding.py`).
2. A worker reads its pieces in order (two threads reading and building ahead, each keeping the
   few files it read last open, so memory does not grow with the number of files: `readers.py`), and
   keeps the jets in a shuffle buffer of `data.shuffle_buffer` jets (`buffer.py`). Pieces come from
   files all over the data set, so the buffer mixes files and classes (per-class files included);
   batches are drawn from the buffer at random, half of it stays to mix with the next pieces.
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

from jettag.data.reader import JetFile
from jettag.data.streaming.buffer import ShuffleBuffer
from jettag.data.streaming.readers import GC_EVERY, OPEN_FILES, READERS, PieceReader
from jettag.data.streaming.sharding import Piece, cut_shares, distributed_rank
from jettag.data.streaming.stream import PREFETCH, JetStream, JetStreamLoader

__all__ = [
    "GC_EVERY",
    "OPEN_FILES",
    "PREFETCH",
    "READERS",
    "JetFile",
    "JetStream",
    "JetStreamLoader",
    "Piece",
    "PieceReader",
    "ShuffleBuffer",
    "cut_shares",
    "distributed_rank",
]
