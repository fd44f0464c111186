"""Each generated JetClass class on a handful of jets: its one-hot label, and decay products that pass
its truth-matching rule, checked with `vector` from the aux_genpart_* branches written to the file."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot
import vector

pytest.importorskip("pythia8mc")
pytest.importorskip("fastjet")

from jettag.generate.pythia import GENERATED_CLASSES, LABEL_BRANCHES, generate_jets, write_jetclass_root

NEW = ("Tbl", "Wqq", "Zqq", "Hbb", "Hcc", "Hgg", "H4q")
N_PER_CLASS = 2
# per class: |pid| of row 0 (the decaying particle), the rows that must lie within dR < 0.8 of the
# jet axis, and the allowed |pid| of those rows
RULES = {
    "Tbl": (6, [1, 3], [{1, 2, 3, 4, 5}, {11, 13, 15}]),
    "Wqq": (24, [1, 2], [{1, 2, 3, 4, 5}] * 2),
    "Zqq": (23, [1, 2], [{1, 2, 3, 4, 5}] * 2),
    "Hbb": (25, [1, 2], [{5}] * 2),
    "Hcc": (25, [1, 2], [{4}] * 2),
    "Hgg": (25, [1, 2], [{21}] * 2),
    "H4q": (25, [3, 4, 5, 6], [{1, 2, 3, 4, 5}] * 4),
}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    jets = generate_jets(NEW, N_PER_CLASS, seed=3, workers=2, progress=False, block_size=N_PER_CLASS)
    path = tmp_path_factory.mktemp("classes") / "jets.root"
    write_jetclass_root(path, jets)
    return uproot.open(path)["tree"].arrays(library="ak"), jets.stats


def test_all_listed_classes_are_generated():
    assert set(GENERATED_CLASSES) == {"QCD", "Tbqq", *NEW}


@pytest.mark.parametrize("name", NEW)
def test_class_passes_its_truth_matching(written, name):
    arrays, stats = written
    onehot = np.stack([ak.to_numpy(arrays[b]) for b in LABEL_BRANCHES], axis=1).astype(int)
    assert np.all(onehot.sum(axis=1) == 1)
    jets = arrays[ak.to_numpy(arrays[f"label_{name}"]).astype(bool)]
    assert len(jets) == N_PER_CLASS and stats[name].jets == N_PER_CLASS
    parent, required, pids = RULES[name]
    assert np.all(np.abs(ak.to_numpy(jets["aux_genpart_pid"][:, 0])) == parent)
    for row, allowed in zip(required, pids, strict=True):
        assert set(np.abs(ak.to_numpy(jets["aux_genpart_pid"][:, row])).astype(int)) <= allowed
    axis = vector.zip(
        {"pt": jets["jet_pt"], "eta": jets["jet_eta"], "phi": jets["jet_phi"], "mass": jets["jet_mass"]}
    )
    products = vector.zip({"pt": jets["aux_genpart_pt"], "eta": jets["aux_genpart_eta"],
                           "phi": jets["aux_genpart_phi"], "mass": jets["aux_genpart_mass"]})[:, required]  # fmt: skip
    assert ak.all(products.deltaR(axis[:, np.newaxis]) < 0.8)
    pt, eta = ak.to_numpy(jets["jet_pt"]), ak.to_numpy(jets["jet_eta"])
    assert np.all((pt > 550) & (pt < 650) & (np.abs(eta) < 2))
    # the decaying particle's mass: t 173, W 80 (60-100 generated), Z 91 (71-111), H 125 GeV
    mass = ak.to_numpy(jets["aux_genpart_mass"][:, 0])
    np.testing.assert_allclose(mass, {6: 173, 24: 80.4, 23: 91.2, 25: 125}[parent], rtol=0.25)
