"""Tiny toy files for the cluster tests (DDP, resume, sweeps, SLURM)."""

from __future__ import annotations

import pytest
from helpers import toy_jets, write_root


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory):
    """64 training, 40 validation and 50 test toy jets."""
    base = tmp_path_factory.mktemp("tiny")
    sizes = {"train": 64, "val": 40, "test": 50}
    return {
        split: write_root(base / f"{split}.root", toy_jets(n, seed=60 + i))
        for i, (split, n) in enumerate(sizes.items())
    }
