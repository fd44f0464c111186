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
        labels=["label_QCD", "label_Tbqq"], batch_size=32, piece_size=40, shuffle_buffer=100,
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
    ids = torch.cat([b.entry for rank in batches for b in batches[rank]]).numpy()
    assert len(ids) == total and np.array_equal(np.sort(ids), np.arange(total))
    # equal numbers of batches on both ranks (DDP would wait forever otherwise), as announced by len()
    assert len(batches[0]) == len(batches[1]) == len(stream)
    # labels from the file groups: ids below the QCD total are QCD jets (files in group order)
    labels = torch.cat([b.y for rank in batches for b in batches[rank]]).numpy()
    assert np.array_equal(labels, (ids >= sum(SIZES["qcd"])).astype(int))
    # classes mixed within the first batch of every rank although every file holds a single class
    for rank in (0, 1):
        first = batches[rank][0].y.numpy()
        assert 0 < first.mean() < 1


def test_order_reproducible_from_seed_and_changes_with_epoch(group_files):
    def order(seed, epoch):
        stream = datamodule(group_files, seed=seed).stream("train")
        return torch.cat([b.entry for b in run_epoch(stream, 0, 1, workers=0, epoch=epoch)]).numpy()

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
    ids = torch.cat([b.entry for r in batches for b in batches[r]]).numpy()
    # the jets that pass, read from the files independently of jettag
    kept = np.flatnonzero(np.concatenate([
        uproot.open(group_files / f"{cls}_{i}.root")["tree"]["jet_pt"].array(library="np") > 590
        for cls in ("qcd", "top") for i in range(len(SIZES[cls]))
    ]))  # fmt: skip
    assert np.array_equal(np.unique(ids), kept)
    # jets are repeated only to fill batches a share cannot fill any more, and those are counted
    repeated = sum((b.skipped or {}).get("repeated", 0) for r in batches for b in batches[r])
    assert len(ids) - len(kept) == repeated
    assert all(len(b) > 0 for r in batches for b in batches[r])


def test_loader_moves_epochs_and_counts_skips(group_files):
    dm = datamodule(group_files, selection="jet_pt > 590", num_workers=0)
    dm.files["val"] = dm.files["train"]
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader, JetStreamLoader)
    one = torch.cat([b.entry for b in loader])
    two = torch.cat([b.entry for b in loader])
    assert not torch.equal(one, two) and torch.equal(one.sort().values, two.sort().values)
    summary = dm.summary()["train"]
    assert summary["jets"] == len(one)
    assert summary["skipped"]["failed_selection"] == sum(SIZES["qcd"]) + sum(SIZES["top"]) - len(one)


def test_streaming_auto_above_the_in_memory_limit(group_files):
    total = sum(SIZES["qcd"]) + sum(SIZES["top"])
    assert datamodule(group_files, streaming="auto", in_memory_max_jets=total - 1).is_streamed("train")
    assert not datamodule(group_files, streaming="auto", in_memory_max_jets=total).is_streamed("train")
    assert not datamodule(group_files, streaming=True).is_streamed("test")  # the report keeps every test jet


FLAGS = FeatureSet.from_config(
    {
        "name": "flags",
        "particle_features": [["part_pt_log", 1.7, 0.7], "part_deta", "part_isPhoton", "part_charge"],
    }
)


def test_stream_batches_hold_the_files_particles(group_files):
    """Every padded batch against the files read with uproot and numpy: the pool gathers particles
    from many pieces (and from compacted ones), pads with zero rows, and keeps flags as 0/1."""
    files = [group_files / f"{cls}_{i}.root" for cls in ("qcd", "top") for i in range(len(SIZES[cls]))]
    names = ["part_px", "part_py", "part_pz", "part_energy", "part_deta", "part_isPhoton", "part_charge"]
    jets = []  # (class, {branch: values}) of every jet, in the order of the global jet ids
    for path in files:
        arrays = uproot.open(path)["tree"].arrays(names, library="np")
        for entry in range(len(arrays["part_px"])):
            jets.append((int(path.name.startswith("top")), {n: arrays[n][entry] for n in names}))
    dm = JetDataModule(FLAGS, **{**dict(
        train_files=[f"QCD:{group_files}/qcd_*.root", f"Tbqq:{group_files}/top_*.root"],
        labels=["label_QCD", "label_Tbqq"], batch_size=32, piece_size=40, shuffle_buffer=100,
        streaming=True, progress=False, seed=3,
    )})  # fmt: skip
    seen = []
    for batch in JetStreamLoader(dm.stream("train")):
        x, v, mask = batch.x.numpy(), batch.v.numpy(), batch.mask.numpy()
        for j, jet_id in enumerate(batch.entry.tolist()):
            cls, b = jets[jet_id]
            n = len(b["part_px"])
            assert mask[j].tolist() == [True] * n + [False] * (mask.shape[1] - n)
            assert batch.y[j] == cls
            four = np.stack([b["part_px"], b["part_py"], b["part_pz"], b["part_energy"]], axis=1)
            assert np.array_equal(v[j, :n], four.astype(np.float32))
            pt_log = np.clip((np.log(np.hypot(b["part_px"], b["part_py"])) - 1.7) * 0.7, -5, 5)
            np.testing.assert_allclose(x[j, :n, 0], pt_log, rtol=1e-5, atol=1e-5)
            assert np.array_equal(x[j, :n, 1], b["part_deta"].astype(np.float32))
            assert np.array_equal(x[j, :n, 2], np.where(b["part_isPhoton"], 1.0, 0.0))
            assert np.array_equal(x[j, :n, 3], b["part_charge"].astype(np.float32))
            assert not x[j, n:].any() and not v[j, n:].any()  # padding: zeros
            seen.append(jet_id)
    assert sorted(seen) == list(range(len(jets)))


def test_few_files_are_opened_once_per_reader(tmp_path, monkeypatch):
    """Pieces come in a random order; the readers keep the files they read last open."""
    from jettag.data import streaming

    for i in range(3):  # 3 files of 60 jets in baskets of 10: 18 pieces of 10 in a random order
        jets = toy_jets(60, seed=i)
        with uproot.recreate(tmp_path / f"f{i}.root") as out:
            for start in range(0, 60, 10):
                part = {k: v[start : start + 10] for k, v in jets.items()}
                if start == 0:
                    out.mktree(
                        "tree", {k: v.type if hasattr(v, "layout") else v.dtype for k, v in part.items()}
                    )
                out["tree"].extend(part)
    opened = []
    original = streaming.JetFile.__init__

    def counting(self, path, *args, **kwargs):
        opened.append(str(path))
        original(self, path, *args, **kwargs)

    def epoch(open_files: int) -> int:
        dm = JetDataModule(KIN, train_files=[str(tmp_path / "f*.root")], labels=["label_QCD", "label_Tbqq"],
                           batch_size=16, piece_size=10, shuffle_buffer=30, streaming=True, progress=False)  # fmt: skip
        stream = dm.stream("train")
        assert len(stream.pieces(0)) == 18
        monkeypatch.setattr(streaming.readers, "OPEN_FILES", open_files)
        opened.clear()
        assert sum(len(b) for b in JetStreamLoader(stream)) == 180
        return len(opened)

    monkeypatch.setattr(streaming.JetFile, "__init__", counting)
    assert epoch(open_files=3) <= 3 * streaming.READERS  # each file at most once per reader
    assert epoch(open_files=1) > 3 * streaming.READERS  # one open file: reopened on most switches
