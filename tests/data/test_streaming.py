"""Streaming: every jet once per epoch over 2 workers x 2 simulated DDP ranks, mixing, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import uproot
from helpers import toy_jets, write_root
from torch.utils.data import DataLoader

from jettag.data import JetDataModule
from jettag.data.streaming import JetStream, JetStreamLoader, Piece, cut_shares
from jettag.features.sets import FeatureSet

KIN = FeatureSet.from_config({"name": "kin", "particle_features": [["part_pt_log", 1.7, 0.7], "part_deta"]})
SIZES = {"qcd": [97, 130, 61], "top": [88, 45, 120]}


@pytest.fixture(scope="module")
def group_files(tmp_path_factory):
    """Per-class files without label branches, as JetClass ships them: QCD in qcd_*, top in top_*."""
    base = tmp_path_factory.mktemp("groups")
    for cls, label in (("qcd", "label_QCD"), ("top", "label_Tbqq")):
        for i, n in enumerate(SIZES[cls]):
            jets = toy_jets(n, seed=100 + 10 * i + len(cls), classes=(label,))
            jets = {k: v for k, v in jets.items() if not k.startswith("label_")}
            jets["jet_index"] = np.arange(n, dtype=np.int64)
            write_root(base / f"{cls}_{i}.root", jets)
    return base


def datamodule(base, **kwargs) -> JetDataModule:
    settings = dict(
        train_files=[f"QCD:{base}/qcd_*.root", f"Tbqq:{base}/top_*.root"],
        labels=["label_QCD", "label_Tbqq"], batch_size=32, chunk_size=40, shuffle_buffer=100,
        streaming=True, progress=False, seed=3,
    )  # fmt: skip
    settings.update(kwargs)
    return JetDataModule(KIN, **settings)


def run_epoch(stream: JetStream, rank: int, world: int, workers: int, epoch: int = 0) -> list[dict]:
    stream.rank, stream.world_size = rank, world
    stream.set_epoch(epoch)
    stream.num_workers = max(workers, 1)
    return list(DataLoader(stream, batch_size=None, num_workers=workers))


def test_cut_shares_equal_and_contiguous():
    pieces = [Piece(0, 0, 40), Piece(1, 40, 45), Piece(0, 40, 97)]
    shares = cut_shares(pieces, 4)
    sizes = [sum(p.stop - p.start for p in s) for s in shares]
    assert sizes == [25, 25, 25, 27] or max(sizes) - min(sizes) <= 1
    flat = [(p.file, e) for s in shares for p in s for e in range(p.start, p.stop)]
    expected = [(p.file, e) for p in pieces for e in range(p.start, p.stop)]
    assert flat == expected  # nothing lost, nothing repeated, order kept


def test_every_jet_once_with_two_workers_and_two_ranks(group_files):
    dm = datamodule(group_files)
    stream = dm.stream("train")
    total = sum(SIZES["qcd"]) + sum(SIZES["top"])
    batches = {rank: run_epoch(stream, rank, 2, workers=2) for rank in (0, 1)}
    ids = torch.cat([b["index"] for rank in batches for b in batches[rank]]).numpy()
    assert len(ids) == total and np.array_equal(np.sort(ids), np.arange(total))
    # equal numbers of batches on both ranks (DDP would wait forever otherwise), as announced by len()
    assert len(batches[0]) == len(batches[1]) == len(stream)
    # labels from the file groups: ids below the QCD total are QCD jets (files in group order)
    labels = torch.cat([b["y"] for rank in batches for b in batches[rank]]).numpy()
    assert np.array_equal(labels, (ids >= sum(SIZES["qcd"])).astype(int))
    # classes mixed within the first batch of every rank although every file holds a single class
    for rank in (0, 1):
        first = batches[rank][0]["y"].numpy()
        assert 0 < first.mean() < 1


def test_order_reproducible_from_seed_and_changes_with_epoch(group_files):
    def order(seed, epoch):
        stream = datamodule(group_files, seed=seed).stream("train")
        return torch.cat([b["index"] for b in run_epoch(stream, 0, 1, workers=0, epoch=epoch)]).numpy()

    first = order(3, 0)
    assert np.array_equal(first, order(3, 0))
    assert not np.array_equal(first, order(3, 1))
    assert not np.array_equal(first, order(4, 0))
    assert np.array_equal(np.sort(first), np.arange(len(first)))


def test_ddp_batches_equal_when_a_selection_removes_jets(group_files):
    dm = datamodule(group_files, selection="jet_pt > 590")
    stream = dm.stream("train")
    batches = {rank: run_epoch(stream, rank, 2, workers=0) for rank in (0, 1)}
    assert len(batches[0]) == len(batches[1]) == len(stream)
    ids = torch.cat([b["index"] for r in batches for b in batches[r]]).numpy()
    # the jets that pass, read from the files independently of jettag
    kept = np.flatnonzero(np.concatenate([
        uproot.open(group_files / f"{cls}_{i}.root")["tree"]["jet_pt"].array(library="np") > 590
        for cls in ("qcd", "top") for i in range(len(SIZES[cls]))
    ]))  # fmt: skip
    assert np.array_equal(np.unique(ids), kept)
    # jets are repeated only to fill batches a share cannot fill any more, and those are counted
    repeated = sum(b.get("skipped", {}).get("repeated", 0) for r in batches for b in batches[r])
    assert len(ids) - len(kept) == repeated
    assert all(len(b["y"]) > 0 for r in batches for b in batches[r])


def test_loader_moves_epochs_and_counts_skips(group_files):
    dm = datamodule(group_files, selection="jet_pt > 590", num_workers=0)
    dm.files["val"] = dm.files["train"]
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader, JetStreamLoader)
    one = torch.cat([b["index"] for b in loader])
    two = torch.cat([b["index"] for b in loader])
    assert not torch.equal(one, two) and torch.equal(one.sort().values, two.sort().values)
    summary = dm.summary()["train"]
    assert summary["jets"] == len(one)
    assert summary["skipped"]["failed_selection"] == sum(SIZES["qcd"]) + sum(SIZES["top"]) - len(one)


def test_streaming_auto_above_the_in_memory_limit(group_files):
    total = sum(SIZES["qcd"]) + sum(SIZES["top"])
    assert datamodule(group_files, streaming="auto", in_memory_max_jets=total - 1).is_streamed("train")
    assert not datamodule(group_files, streaming="auto", in_memory_max_jets=total).is_streamed("train")
    assert not datamodule(group_files, streaming=True).is_streamed("test")  # the report keeps every test jet
