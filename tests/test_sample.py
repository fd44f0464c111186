"""The generated sample shipped inside the package: present, small, JetClass schema, what the default run reads."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot
import vector
import yaml

from jettag.paths import SAMPLE_DIR, config_dir

SPLITS = ("train", "val", "test")
PARTICLE_BRANCHES = [f"part_{n}" for n in ("px", "py", "pz", "energy", "deta", "dphi", "d0val", "d0err", "dzval",
                     "dzerr", "charge", "isChargedHadron", "isNeutralHadron", "isPhoton", "isElectron", "isMuon")]  # fmt: skip
JET_BRANCHES = ["jet_pt", "jet_eta", "jet_phi", "jet_energy", "jet_mass", "jet_nparticles", "jet_sdmass",
                "jet_tau1", "jet_tau2", "jet_tau3", "jet_tau4"]  # fmt: skip


def sample_files() -> dict[str, str]:
    return {split: str(SAMPLE_DIR / f"top_qcd_{split}.root") for split in SPLITS}


def test_sample_is_at_most_10_mb():
    sizes = [SAMPLE_DIR.joinpath(f"top_qcd_{s}.root").stat().st_size for s in SPLITS]
    assert sum(sizes) <= 10 * 1024 * 1024


@pytest.mark.parametrize("split", SPLITS)
def test_sample_schema_and_kinematics(split):
    tree = uproot.open(sample_files()[split])["tree"]
    assert set(PARTICLE_BRANCHES + JET_BRANCHES + ["label_QCD", "label_Tbqq"]) <= set(tree.keys())
    arrays = tree.arrays(["part_px", "part_py", "part_pz", "part_energy", "jet_pt", "jet_eta", "label_QCD",
                          "label_Tbqq"])  # fmt: skip
    assert np.all(arrays["label_QCD"] ^ arrays["label_Tbqq"])  # one-hot
    assert 0.4 < np.mean(arrays["label_Tbqq"]) < 0.6
    jet = vector.zip({"px": arrays["part_px"], "py": arrays["part_py"], "pz": arrays["part_pz"],
                      "E": arrays["part_energy"]})  # fmt: skip
    jet = ak.sum(jet, axis=1)
    np.testing.assert_allclose(np.asarray(jet.pt), arrays["jet_pt"].to_numpy(), rtol=2e-3)
    assert np.all((arrays["jet_pt"] > 549) & (arrays["jet_pt"] < 651) & (np.abs(arrays["jet_eta"]) < 2))


def test_default_run_reads_the_sample():
    cfg = yaml.safe_load((config_dir() / "data" / "top_sample.yaml").read_text())
    names = [f.split(":")[1].rstrip("}") for split in SPLITS for f in cfg[f"{split}_files"]]
    assert names == [f"top_qcd_{s}.root" for s in SPLITS]
