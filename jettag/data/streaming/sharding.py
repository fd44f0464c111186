"""Which jets each DataLoader worker of each DDP rank reads in an epoch.

The files are cut into pieces of about `piece_size` entries on basket / row-group boundaries
(`JetFile.piece_bounds`). Each epoch the pieces are put in a random order drawn from `(seed, epoch)`
(the same on every rank and worker), and the resulting stream of entries is cut into
`world_size x num_workers` contiguous shares of equal size (+-1 jet): worker `w` of rank `r` reads
share `r * num_workers + w`.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from jettag.data.dataset import torch_world


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


def file_pieces(bounds: Sequence[Sequence[int]], seed: int, epoch: int, shuffle: bool) -> list[Piece]:
    """The pieces of the files with piece boundaries `bounds`, in the epoch's order."""
    pieces = [Piece(i, a, b) for i, edges in enumerate(bounds) for a, b in itertools.pairwise(edges) if b > a]
    if shuffle:
        order = np.random.default_rng((seed, epoch)).permutation(len(pieces))
        pieces = [pieces[i] for i in order]
    return pieces


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
