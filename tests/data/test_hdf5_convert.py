"""The original top-tagging HDF5 table: read directly, and converted by jettag-convert to Parquet/ROOT."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pandas as pd
import pytest
import uproot
import vector
from helpers import run_cli, top_tagging_table

from jettag.cli.convert import main as convert_main
from jettag.data import JetDataModule
from jettag.features.sets import FeatureSet

SLOTS = 60
KIN = FeatureSet.from_config(
    {"name": "kin", "particle_features": ["part_pt_log", "part_deta", "part_dphi", "part_logerel"]}
)


@pytest.fixture(scope="module")
def table_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("h5") / "train.h5"
    frame = top_tagging_table(70, seed=7, slots=SLOTS)
    frame.to_hdf(path, key="table", mode="w")  # the original files use pandas' default (fixed) format
    return path, frame


def by_hand(frame: pd.DataFrame):
    """Constituents, jet four-momentum and labels of the table, with numpy and vector."""
    e, px, py, pz = (
        frame[[f"{c}_{i}" for i in range(SLOTS)]].to_numpy(np.float64) for c in ("E", "PX", "PY", "PZ")
    )
    real = e > 0
    jet = vector.array({"px": px.sum(1), "py": py.sum(1), "pz": pz.sum(1), "E": e.sum(1)})
    return real, e, px, py, pz, jet, frame["is_signal_new"].to_numpy()


def read(files, labels="label", class_names=("QCD", "Top")):
    dm = JetDataModule(KIN, train_files=files, labels=labels, class_names=list(class_names), progress=False,
                       chunk_size=25, observers=["jet_pt", "jet_mass", "jet_nparticles"])  # fmt: skip
    return dm.dataset("train").jets


def test_hdf5_table_read_directly(table_file):
    path, frame = table_file
    jets = read([str(path)])
    real, e, px, py, pz, jet, label = by_hand(frame)
    assert np.array_equal(jets.labels, label)
    assert np.array_equal(jets.counts, real.sum(1))
    assert np.allclose(jets.features[:, 0], np.log(np.hypot(px, py)[real]), atol=1e-5)
    assert np.allclose(jets.observers["jet_pt"], jet.pt, rtol=1e-5)
    assert np.allclose(jets.observers["jet_mass"], jet.mass, rtol=1e-4, atol=1e-3)
    # deta in the JetClass convention, against vector's pseudorapidity
    p = vector.array({"px": px[real], "py": py[real], "pz": pz[real], "E": e[real]})
    jet_eta = np.repeat(jet.eta, real.sum(1))
    assert np.allclose(jets.features[:, 1], (p.eta - jet_eta) * np.where(jet_eta >= 0, 1, -1), atol=1e-4)


def test_convert_to_parquet_and_root(table_file, tmp_path):
    path, frame = table_file
    convert_main([str(path), str(tmp_path / "train.parquet"), "--chunk-size", "30", "--no-progress"])
    result = run_cli("jettag-convert", str(path), str(tmp_path / "train.root"), "--chunk-size", "30")
    assert result.returncode == 0, result.stderr[-2000:]
    real, e, _, _, _, jet, label = by_hand(frame)

    table = ak.from_parquet(tmp_path / "train.parquet")
    tree = uproot.open(tmp_path / "train.root")["tree"].arrays(library="ak")
    for converted in (table, tree):
        assert len(converted) == len(frame)
        assert np.array_equal(ak.to_numpy(converted["label"]), label)
        assert np.array_equal(ak.to_numpy(converted["label_Tbqq"]).astype(int), label)
        assert np.array_equal(ak.to_numpy(ak.num(converted["part_px"])), real.sum(1))
        assert np.allclose(ak.to_numpy(ak.flatten(converted["part_energy"])), e[real], rtol=1e-6)
        assert np.allclose(ak.to_numpy(converted["jet_mass"]), jet.mass, rtol=1e-4, atol=1e-3)
    # the converted files read like the table itself
    direct = read([str(path)])
    for name in ("train.parquet", "train.root"):
        again = read([str(tmp_path / name)], labels=["label_QCD", "label_Tbqq"])
        assert np.array_equal(again.labels, direct.labels)
        assert np.allclose(again.features, direct.features, atol=1e-5)


def test_convert_refuses_bad_output(table_file, tmp_path, capsys):
    path, _ = table_file
    with pytest.raises(SystemExit) as stop:
        convert_main([str(path), str(tmp_path / "out.csv")])
    assert stop.value.code == 2 and "name it .parquet or .root" in capsys.readouterr().err
