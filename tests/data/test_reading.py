"""Reading ROOT and Parquet files into JetArrays: chunks, globs, labels, truncation, observers."""

import awkward as ak
import numpy as np
import pytest
import uproot

from jettag.data import JetBuilder, JetDataModule, LabelSpec, read_jets, resolve_files
from jettag.features.sets import Feature, FeatureSet

RAW = FeatureSet("raw", (Feature("part_pt"), Feature("part_deta"), Feature("part_charge")), max_particles=128)


def builder(fs=RAW, labels=("label_QCD", "label_Tbqq"), observers=("jet_pt", "jet_nparticles")):
    return JetBuilder(
        fs, LabelSpec.from_config(list(labels) if not isinstance(labels, str) else labels), observers
    )


def test_chunked_read_equals_whole_read(toy_root_files):
    path = toy_root_files["val"]
    whole, _ = read_jets([path], builder(), "tree", 100_000, "data.val_files", progress=False)
    chunked, _ = read_jets([path], builder(), "tree", 37, "data.val_files", progress=False)
    np.testing.assert_array_equal(whole.features, chunked.features)
    np.testing.assert_array_equal(whole.counts, chunked.counts)
    np.testing.assert_array_equal(whole.labels, chunked.labels)


def test_values_match_the_file(toy_root_files):
    path = toy_root_files["val"]
    jets, _ = read_jets([path], builder(), "tree", 50, "k", progress=False)
    arrays = uproot.open(path)["tree"].arrays()
    pt = np.hypot(ak.to_numpy(ak.flatten(arrays.part_px)), ak.to_numpy(ak.flatten(arrays.part_py)))
    np.testing.assert_allclose(jets.features[:, 0], pt, rtol=1e-6)
    np.testing.assert_array_equal(jets.features[:, 1], ak.to_numpy(ak.flatten(arrays.part_deta)))
    np.testing.assert_array_equal(jets.labels, ak.to_numpy(arrays.label_Tbqq).astype(int))
    np.testing.assert_array_equal(jets.truth["label_QCD"], ak.to_numpy(arrays.label_QCD).astype(int))
    np.testing.assert_array_equal(jets.observers["jet_pt"], ak.to_numpy(arrays.jet_pt))


def test_truncation_keeps_the_hardest_particles_and_sorts(tmp_path):
    from helpers import toy_jets, write_root

    branches = toy_jets(20, seed=5)
    # reverse every jet's particle order: the reader must sort by pT again
    branches = {k: v[:, ::-1] if k.startswith("part_") else v for k, v in branches.items()}
    path = write_root(tmp_path / "reversed.root", branches)
    fs = FeatureSet("pt", (Feature("part_pt"),), max_particles=8)
    jets, _ = read_jets([path], builder(fs), "tree", 7, "k", progress=False)
    assert jets.counts.max() == 8
    pt = np.hypot(branches["part_px"], branches["part_py"])
    expected = ak.to_numpy(ak.flatten(ak.sort(pt, ascending=False)[:, :8]))
    np.testing.assert_allclose(jets.features[:, 0], expected, rtol=1e-6)
    # jet_nparticles derived from the file's count, before truncation
    np.testing.assert_array_equal(jets.observers["jet_nparticles"], ak.to_numpy(ak.num(pt)))


def test_globs_and_lists(toy_root_files):
    files = resolve_files([toy_root_files["train"], toy_root_files["val"]], "data.train_files")
    assert files == [toy_root_files["train"], toy_root_files["val"]]
    pattern = toy_root_files["train"].replace("train.root", "*.root")
    assert resolve_files(pattern, "k") == sorted([toy_root_files[s] for s in ("train", "val", "test")])


def test_parquet_with_integer_labels(toy_parquet_files):
    fs = FeatureSet("kin", (Feature("part_pt_log", 1.7, 0.7), Feature("part_deta")), max_particles=128)
    b = JetBuilder(fs, LabelSpec.from_config("label", ["QCD", "Top"]), ["jet_mass"])
    jets, _ = read_jets([toy_parquet_files["val"]], b, "tree", 64, "k", progress=False)
    table = ak.from_parquet(toy_parquet_files["val"])
    np.testing.assert_array_equal(jets.labels, ak.to_numpy(table.label))
    np.testing.assert_array_equal(jets.truth["label"], ak.to_numpy(table.label))
    np.testing.assert_allclose(jets.observers["jet_mass"], ak.to_numpy(table.jet_mass))


def test_datamodule_batches(toy_root_files):
    fs = FeatureSet("raw", (Feature("part_pt"),), max_particles=128)
    dm = JetDataModule(fs, train_files=[toy_root_files["train"]], val_files=[toy_root_files["val"]],
                       test_files=[toy_root_files["test"]], batch_size=64, progress=False)  # fmt: skip
    dm.setup("fit")
    assert dm.num_classes == 2 and dm.class_names == ["label_QCD", "label_Tbqq"]
    seen = np.concatenate([b.entry.numpy() for b in dm.train_dataloader()])
    # drop_last drops at most one partial batch; everything else appears exactly once
    assert len(seen) == len(set(seen)) and len(dm.datasets["train"]) - len(seen) < 64
    val = np.concatenate([b.entry.numpy() for b in dm.val_dataloader()])
    assert sorted(val) == list(range(len(dm.datasets["val"])))


def test_unknown_label_class_for_background():
    with pytest.raises(Exception, match=r"data\.background"):
        LabelSpec.from_config(["label_QCD", "label_Tbqq"]).index("label_Hbb")


def test_zlib_baskets_read_with_isal_equal_the_standard_library(toy_root_files):
    """jettag decompresses ROOT's zlib baskets with ISA-L; the arrays equal those read with zlib."""
    from uproot import compression

    from jettag.data.reader import JetFile

    decompressor = compression._decompress_ZLIB
    path = toy_root_files["train"]
    assert isinstance(uproot.open(path).file.compression, uproot.ZLIB)  # uproot's default
    previous = decompressor.library
    try:
        decompressor.library = "zlib"
        expected = uproot.open(path, array_cache=None)["tree"].arrays(["part_px", "jet_pt"])
        f = JetFile(path)  # switches to ISA-L
        assert decompressor.library == "isal"
        got = f.read(["part_px", "jet_pt"], 0, f.num_entries).arrays
    finally:
        decompressor.library = previous
    assert ak.array_equal(got.part_px, expected.part_px) and ak.array_equal(got.jet_pt, expected.jet_pt)


def test_malloc_settings_apply_once_and_can_be_turned_off(monkeypatch):
    import sys

    from jettag.data import memory

    if sys.platform.startswith("linux"):
        assert memory.keep_freed_memory() is True and memory.keep_freed_memory() is True
    monkeypatch.setenv("JETTAG_MALLOC_DEFAULTS", "1")
    assert memory._apply() is False  # glibc's defaults kept
