"""Session fixtures: tiny input files written once per test session (see helpers.py)."""

from __future__ import annotations

import os

import pytest
from helpers import JETCLASS_LABELS, toy_jets, write_parquet, write_root

os.environ.setdefault("MPLBACKEND", "Agg")
# Tiny batches: a second thread only adds synchronisation (and waits on a busy machine); the
# command-line tools started by the tests inherit this too.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def toy_root_files(tmp_path_factory):
    """train/val/test JetClass-schema ROOT files of toy top and QCD jets."""
    base = tmp_path_factory.mktemp("toy_root")
    sizes = {"train": 600, "val": 200, "test": 300}
    return {
        split: write_root(base / f"{split}.root", toy_jets(n, seed=i))
        for i, (split, n) in enumerate(sizes.items())
    }


@pytest.fixture(scope="session")
def toy_multiclass_files(tmp_path_factory):
    """train/val/test JetClass-schema ROOT files with all ten JetClass classes."""
    base = tmp_path_factory.mktemp("toy_multiclass")
    sizes = {"train": 500, "val": 300, "test": 400}
    return {
        split: write_root(base / f"{split}.root", toy_jets(n, seed=20 + i, classes=JETCLASS_LABELS))
        for i, (split, n) in enumerate(sizes.items())
    }


@pytest.fixture(scope="session")
def toy_parquet_files(tmp_path_factory):
    base = tmp_path_factory.mktemp("toy_parquet")
    sizes = {"train": 400, "val": 200, "test": 200}
    return {
        split: write_parquet(base / f"{split}.parquet", toy_jets(n, seed=10 + i))
        for i, (split, n) in enumerate(sizes.items())
    }
