"""The Pythia8 + FastJet generator on a handful of jets: schema, kinematics (against `vector`),
truth matching, the pT / |eta| window, reproducibility and the command line."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot
import vector
from helpers import run_cli

pytest.importorskip("pythia8mc")
pytest.importorskip("fastjet")

from jettag.generate.branches import BRANCHES, LABEL_BRANCHES
from jettag.generate.driver import generate_jets
from jettag.generate.writer import round_mantissa, write_jetclass_root

N_PER_CLASS = 6


@pytest.fixture(scope="module")
def generated():
    return generate_jets(("Tbqq", "QCD"), N_PER_CLASS, seed=5, workers=1, progress=False, block_size=4)


@pytest.fixture(scope="module")
def written(generated, tmp_path_factory):
    path = tmp_path_factory.mktemp("gen") / "jets.root"
    write_jetclass_root(path, generated)
    return uproot.open(path)["tree"].arrays(library="ak")


def test_schema_and_labels(written):
    assert len(written) == 2 * N_PER_CLASS
    assert set(BRANCHES) <= set(written.fields)
    onehot = np.stack([ak.to_numpy(written[b]) for b in LABEL_BRANCHES], axis=1).astype(int)
    assert np.all(onehot.sum(axis=1) == 1)
    assert onehot[:, LABEL_BRANCHES.index("label_Tbqq")].sum() == N_PER_CLASS
    assert onehot[:, LABEL_BRANCHES.index("label_QCD")].sum() == N_PER_CLASS
    counts = ak.to_numpy(ak.num(written["part_px"]))
    np.testing.assert_array_equal(counts, ak.to_numpy(written["jet_nparticles"]))


def test_jet_kinematics_against_vector(written):
    parts = vector.zip({"px": written["part_px"], "py": written["part_py"], "pz": written["part_pz"],
                        "E": written["part_energy"]})  # fmt: skip
    jet = ak.sum(parts, axis=1)  # vector sums the four-momenta
    np.testing.assert_allclose(ak.to_numpy(written["jet_pt"]), ak.to_numpy(jet.pt), rtol=1e-4)
    np.testing.assert_allclose(ak.to_numpy(written["jet_eta"]), ak.to_numpy(jet.eta), atol=1e-4)
    np.testing.assert_allclose(ak.to_numpy(written["jet_mass"]), ak.to_numpy(jet.mass), rtol=1e-3, atol=1e-2)
    # the default window: 550 < pT < 650 GeV, |eta| < 2
    pt, eta = ak.to_numpy(written["jet_pt"]), ak.to_numpy(written["jet_eta"])
    assert np.all((pt > 550) & (pt < 650) & (np.abs(eta) < 2))
    # particles pT-ordered; deta / dphi in the JetClass convention
    part_pt = parts.pt
    assert ak.all(part_pt[:, :-1] >= part_pt[:, 1:])
    deta = (parts.eta - jet.eta) * np.where(jet.eta >= 0, 1, -1)
    dphi = parts.deltaphi(jet)
    np.testing.assert_allclose(
        ak.to_numpy(ak.flatten(written["part_deta"])), ak.to_numpy(ak.flatten(deta)), atol=1e-3
    )
    np.testing.assert_allclose(
        ak.to_numpy(ak.flatten(written["part_dphi"])), ak.to_numpy(ak.flatten(dphi)), atol=1e-3
    )
    # anti-kT R=0.8 clusters in (rapidity, phi): slow massive particles may lie further away in eta
    assert ak.all(parts.deltaRapidityPhi(jet) < 0.8 + 0.05)
    # the soft-drop mass grooms: never above the jet mass
    assert np.all(ak.to_numpy(written["jet_sdmass"]) <= ak.to_numpy(written["jet_mass"]) * (1 + 1e-4) + 1e-3)


def test_deta_dphi_against_the_written_jet_axis(written):
    """part_deta / part_dphi as vector computes them from the written four-momenta and jet axis branches."""
    parts = vector.zip({"px": written["part_px"], "py": written["part_py"], "pz": written["part_pz"],
                        "E": written["part_energy"]})  # fmt: skip
    jet_eta, jet_phi = written["jet_eta"], written["jet_phi"]
    axis = vector.zip({"rho": ak.ones_like(jet_eta), "eta": jet_eta, "phi": jet_phi})
    sign = ak.where(jet_eta >= 0, 1.0, -1.0)
    deta = ak.to_numpy(ak.flatten((parts.eta - jet_eta) * sign))
    dphi = ak.to_numpy(ak.flatten(parts.deltaphi(axis)))
    written_deta = ak.to_numpy(ak.flatten(written["part_deta"]))
    written_dphi = ak.to_numpy(ak.flatten(written["part_dphi"]))
    np.testing.assert_allclose(written_deta, deta, atol=2e-5)
    np.testing.assert_allclose(written_dphi, dphi, atol=2e-5)
    assert np.all((written_dphi >= -np.pi) & (written_dphi < np.pi))
    assert (ak.to_numpy(jet_eta) < 0).any() and (ak.to_numpy(jet_eta) >= 0).any()  # both signs exercised


def test_particle_flags_are_exclusive(written):
    flags = [
        "part_isChargedHadron",
        "part_isNeutralHadron",
        "part_isPhoton",
        "part_isElectron",
        "part_isMuon",
    ]
    total = sum(ak.to_numpy(ak.flatten(written[f])).astype(int) for f in flags)
    assert np.all(total == 1)
    charge = ak.to_numpy(ak.flatten(written["part_charge"]))
    neutral = np.zeros(len(charge), bool)
    for flag in ("part_isNeutralHadron", "part_isPhoton"):
        neutral |= ak.to_numpy(ak.flatten(written[flag])) == 1
    assert np.all(charge[neutral] == 0)


def test_top_jets_contain_b_and_w_quarks(written):
    top = ak.to_numpy(written["label_Tbqq"]).astype(bool)
    aux = written[top]
    # rows: top, b, W, q, q'; b and both quarks within dR < 0.8 of the jet axis
    assert ak.all(ak.num(aux["aux_genpart_pt"]) == 5)
    assert np.all(np.abs(ak.to_numpy(aux["aux_genpart_pid"][:, 0])) == 6)
    assert np.all(np.abs(ak.to_numpy(aux["aux_genpart_pid"][:, 2])) == 24)
    jet = vector.zip(
        {"eta": aux["jet_eta"], "phi": aux["jet_phi"], "pt": aux["jet_pt"], "mass": aux["jet_mass"]}
    )
    quarks = vector.zip({"pt": aux["aux_genpart_pt"], "eta": aux["aux_genpart_eta"], "phi": aux["aux_genpart_phi"],
                         "mass": aux["aux_genpart_mass"]})[:, [1, 3, 4]]  # fmt: skip
    assert ak.all(quarks.deltaR(jet[:, np.newaxis]) < 0.8)
    # and a top jet's mass is near the top mass far more often than a QCD jet's
    assert np.median(ak.to_numpy(aux["jet_mass"])) > 120
    assert ak.all(ak.num(written[~top]["aux_genpart_pt"]) == 0)


def test_same_seed_same_jets_whatever_the_workers(generated):
    again = generate_jets(("Tbqq", "QCD"), N_PER_CLASS, seed=5, workers=2, progress=False, block_size=4)
    for name in ("jet_pt", "jet_mass", "label_Tbqq"):
        np.testing.assert_array_equal(generated.arrays[name], again.arrays[name])
    assert ak.all(generated.arrays["part_px"] == again.arrays["part_px"])
    other = generate_jets(("QCD",), 3, seed=6, workers=1, progress=False)
    assert not np.isin(other.arrays["jet_pt"], generated.arrays["jet_pt"]).any()


def test_round_mantissa_precision():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(10_000) * 10 ** rng.uniform(-3, 3, 10_000)).astype(np.float32)
    for bits in (10, 12):
        rounded = round_mantissa(x, bits)
        rel = np.abs(rounded.astype(np.float64) - x) / np.abs(x)
        assert rel.max() <= 2.0 ** -(bits + 1) * (1 + 1e-6)
        assert len(np.unique(rounded)) < len(np.unique(x))
    assert round_mantissa(np.array([0.0, -0.0, 1.0], np.float32), 10).tolist() == [0.0, 0.0, 1.0]


def test_cli_split_files_train_with_jettag(tmp_path):
    out = tmp_path / "gen.root"
    result = run_cli("jettag-generate", "-n", "4", "-o", str(out), "--split", "0.5", "0.25", "0.25",
                     "--seed", "3", "--workers", "2", "--mantissa-bits", "12")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    sizes = {}
    for split in ("train", "val", "test"):
        tree = uproot.open(tmp_path / f"gen_{split}.root")["tree"]
        sizes[split] = tree.num_entries
    assert sizes == {"train": 4, "val": 2, "test": 2}
    assert "wrote" in result.stderr and "Tbqq" in result.stderr

    # the files are what jettag reads
    import yaml

    from jettag.data import read_jets
    from jettag.data.jets import JetBuilder
    from jettag.data.labels import LabelSpec
    from jettag.features.sets import FeatureSet
    from jettag.paths import config_dir

    features = FeatureSet.from_config(yaml.safe_load((config_dir() / "features" / "full.yaml").read_text()))
    builder = JetBuilder(features, LabelSpec.from_config(["label_QCD", "label_Tbqq"]))
    jets, skipped = read_jets(
        [str(tmp_path / "gen_train.root")], builder, "tree", 100, "train", progress=False
    )
    assert len(jets) == 4 and not skipped
    assert np.isfinite(jets.features).all()


def test_cli_bad_output_is_one_sentence(tmp_path):
    result = run_cli("jettag-generate", "-n", "2", "-o", str(tmp_path / "missing" / "x.root"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("jettag-generate: error: cannot write")
    result = run_cli("jettag-generate", "-n", "2", "-o", str(tmp_path / "x.root"), "--pt-min", "700")
    assert result.returncode == 2 and "pt_min=700 must be below pt_max=650" in result.stderr
