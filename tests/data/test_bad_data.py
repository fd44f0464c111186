"""The bad-data table: each kind of bad file is a clear error naming the file (and the entry range),
or, with on_bad_file=skip, a warning and a count of the jets lost, in memory and streaming alike."""

from __future__ import annotations

import logging

import awkward as ak
import numpy as np
import pytest
import uproot
from helpers import toy_jets, write_root

from jettag.data import JetDataModule
from jettag.data.streaming import JetStreamLoader
from jettag.errors import DataError
from jettag.features.sets import FeatureSet

KINPID = FeatureSet.from_config(
    {"name": "kinpid", "particle_features": [["part_pt_log", 1.7, 0.7], "part_charge", "part_isPhoton"]}
)
GOOD = 150


def write_in_baskets(path, jets: dict, basket: int = 100) -> str:
    """A ROOT file whose baskets hold `basket` entries each (so that one can be damaged alone)."""
    particles = {k[len("part_") :]: v for k, v in jets.items() if k.startswith("part_")}
    flat = {k: v for k, v in jets.items() if not k.startswith("part_")}
    n = len(flat["jet_pt"])
    with uproot.recreate(path) as f:
        for start in range(0, n, basket):
            part = {k: v[start : start + basket] for k, v in flat.items()}
            part["part"] = ak.zip({k: v[start : start + basket] for k, v in particles.items()})
            if start == 0:
                tree = f.mktree("tree", part)
            else:
                tree.extend(part)
    return str(path)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad")
    files = {"good": write_root(base / "good.root", toy_jets(GOOD, seed=1))}
    # schema mismatch: no part_charge branch
    jets = {k: v for k, v in toy_jets(120, seed=2).items() if k != "part_charge"}
    files["schema"] = write_root(base / "schema.root", jets)
    # corrupt in the middle: the third basket (entries 200-300) of part_px overwritten with zeros
    path = write_in_baskets(base / "corrupt.root", toy_jets(400, seed=3))
    seek = int(uproot.open(path)["tree"]["part_px"].member("fBasketSeek")[2])
    raw = bytearray(open(path, "rb").read())
    raw[seek + 40 : seek + 400] = bytes(360)
    open(path, "wb").write(raw)
    files["corrupt"] = path
    # truncated: only the first half of a file's bytes
    whole = open(write_root(base / "whole.root", toy_jets(100, seed=4)), "rb").read()
    (base / "truncated.root").write_bytes(whole[: len(whole) // 2])
    files["truncated"] = str(base / "truncated.root")
    # empty: 0 bytes
    (base / "empty.root").write_bytes(b"")
    files["empty"] = str(base / "empty.root")
    # labels not one-hot in the second chunk (entries 100-200 with chunk_size 100): entry 130 is both
    jets = toy_jets(250, seed=5)
    jets["label_QCD"] = np.asarray(jets["label_QCD"]).copy()
    jets["label_Tbqq"] = np.asarray(jets["label_Tbqq"]).copy()
    jets["label_QCD"][130] = jets["label_Tbqq"][130] = True
    files["onehot"] = write_in_baskets(base / "onehot.root", jets)
    return files


def module(files, streaming=False, skip=False) -> JetDataModule:
    return JetDataModule(KINPID, train_files=files, chunk_size=100, piece_size=100, batch_size=64, progress=False,
                         streaming=streaming, on_bad_file="skip" if skip else "error", shuffle_buffer=64)  # fmt: skip


def read_all(dm: JetDataModule) -> tuple[int, dict]:
    if not dm.is_streamed("train"):
        dm.dataset("train")
        return len(dm.datasets["train"]), dm.summary()["train"]["skipped"]
    dm.loaders["train"] = loader = JetStreamLoader(dm.stream("train"))
    jets = sum(len(b) for b in loader)
    return jets, dm.summary()["train"]["skipped"]


# kind -> (words the error must contain, jets lost with on_bad_file=skip, jets of the file that are read)
TABLE = {
    "schema": (["schema.root", "part_charge"], 120, 0),
    "corrupt": (["corrupt.root", "entries 200-300"], 100, 300),
    "truncated": (["truncated.root", "entries 0-100", "truncated or corrupt"], 100, 0),
    "empty": (["empty.root", "empty (0 bytes)"], 0, 0),
    "onehot": (["onehot.root", "not one-hot at entry 130", "entries 100-200"], 100, 150),
}


@pytest.mark.parametrize("streaming", [False, True], ids=["memory", "streaming"])
@pytest.mark.parametrize("kind", list(TABLE))
def test_bad_file_error_or_skip(bad_files, kind, streaming, caplog):
    words, lost, read = TABLE[kind]
    files = [bad_files["good"], bad_files[kind]]
    with pytest.raises(DataError) as err:
        read_all(module(files, streaming))
    for word in words:
        assert word in str(err.value), str(err.value)
    with caplog.at_level(logging.WARNING):
        jets, skipped = read_all(module(files, streaming, skip=True))
    assert jets == GOOD + read  # training goes on with every good jet
    assert skipped.get("bad_file", 0) == lost
    assert any(kind in r.getMessage() or bad_files[kind] in r.getMessage() for r in caplog.records)
