"""Each generated JetClass class on a handful of jets: its one-hot label, and decay products that pass
its truth-matching rule, checked with `vector` from the aux_genpart_* branches written to the file;
`--classes all` writes the ten JetClass labels in JetClass order. Hqql also on hand-built events."""

from __future__ import annotations

import math

import awkward as ak
import numpy as np
import pytest
import uproot
import vector

pytest.importorskip("pythia8mc")
pytest.importorskip("fastjet")

from jettag.generate.blocks import BlockTask, JetWindow, _make_pythia
from jettag.generate.branches import LABEL_BRANCHES
from jettag.generate.cli import parse_args
from jettag.generate.driver import generate_jets
from jettag.generate.processes import GENERATED_CLASSES, PROCESSES
from jettag.generate.truth import higgs_to_four_quarks, match_decay, semileptonic_higgs_decays
from jettag.generate.writer import write_jetclass_root

# JetClass's ten classes in its order (arXiv:2202.03772; configs/data/jetclass.yaml), typed out here
JETCLASS_ORDER = ("QCD", "Hbb", "Hcc", "Hgg", "H4q", "Hqql", "Zqq", "Wqq", "Tbqq", "Tbl")
NEW = ("Tbl", "Wqq", "Zqq", "Hbb", "Hcc", "Hgg", "H4q", "Hqql")
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
    # rows H, W -> q q', W -> l nu, q, q', l, nu: both quarks and the charged lepton
    "Hqql": (25, [3, 4, 5], [{1, 2, 3, 4, 5}, {1, 2, 3, 4, 5}, {11, 13, 15}]),
}


@pytest.fixture(scope="module")
def written_file(tmp_path_factory):
    jets = generate_jets("all", N_PER_CLASS, seed=3, workers=2, progress=False, block_size=N_PER_CLASS)
    path = tmp_path_factory.mktemp("classes") / "jets.root"
    write_jetclass_root(path, jets)
    return path, jets.stats


@pytest.fixture(scope="module")
def written(written_file):
    path, stats = written_file
    return uproot.open(path)["tree"].arrays(library="ak"), stats


def test_all_listed_classes_are_generated():
    assert GENERATED_CLASSES == JETCLASS_ORDER
    assert parse_args(["--classes", "all"]).classes == ["all"]


def test_all_writes_the_ten_jetclass_labels_in_order(written_file):
    path, stats = written_file
    tree = uproot.open(path)["tree"]
    labels = [name for name in tree.keys() if name.startswith("label_")]
    assert labels == [f"label_{name}" for name in JETCLASS_ORDER]
    assert list(stats) == list(JETCLASS_ORDER)
    onehot = np.stack([tree[name].array(library="np") for name in labels], axis=1).astype(int)
    assert onehot.shape == (10 * N_PER_CLASS, 10)
    assert np.all(onehot.sum(axis=1) == 1)
    assert onehot.sum(axis=0).tolist() == [N_PER_CLASS] * 10


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


def _quark_charge(pid: np.ndarray) -> np.ndarray:
    """Electric charge of quarks from their signed pid: up-type +2/3, down-type -1/3 (antiquarks opposite)."""
    up = np.isin(np.abs(pid), (2, 4))
    return np.sign(pid) * np.where(up, 2 / 3, -1 / 3)


def test_hqql_jets_hold_one_hadronic_and_one_leptonic_w(written):
    arrays, _ = written
    jets = arrays[ak.to_numpy(arrays["label_Hqql"]).astype(bool)]
    pid = ak.to_numpy(jets["aux_genpart_pid"]).astype(int)  # rows H, W_had, W_lep, q, q', l, nu
    assert pid.shape == (N_PER_CLASS, 7)
    assert np.all(np.abs(pid[:, 1:3]) == 24) and np.all(pid[:, 1] == -pid[:, 2])
    # charges add up: q q' carry the hadronic W's charge, the lepton the leptonic W's (l- has pid > 0)
    np.testing.assert_allclose(_quark_charge(pid[:, 3]) + _quark_charge(pid[:, 4]), np.sign(pid[:, 1]))
    assert np.all(-np.sign(pid[:, 5]) == np.sign(pid[:, 2]))
    # the neutrino is the lepton's own, with the opposite sign (W+ -> l+ nu_l)
    assert np.all(np.abs(pid[:, 6]) == np.abs(pid[:, 5]) + 1)
    assert np.all(np.sign(pid[:, 6]) == -np.sign(pid[:, 5]))
    # each W's four-momentum is the sum of its two daughters', the H's that of the four
    parts = vector.zip({name: jets[f"aux_genpart_{name}"] for name in ("pt", "eta", "phi", "mass")})
    mass = ak.to_numpy(parts.mass)
    np.testing.assert_allclose(
        ak.to_numpy((parts[:, 3] + parts[:, 4]).mass), mass[:, 1], rtol=1e-3, atol=0.05
    )
    np.testing.assert_allclose(
        ak.to_numpy((parts[:, 5] + parts[:, 6]).mass), mass[:, 2], rtol=1e-3, atol=0.05
    )
    np.testing.assert_allclose(ak.to_numpy((parts[:, 1] + parts[:, 2]).mass), mass[:, 0], rtol=1e-3)
    # H -> W W* below the WW threshold: m(W) + m(W*) < m(H) = 125 GeV, so one W is off shell
    assert np.all(mass[:, 1] + mass[:, 2] < mass[:, 0])


def test_hqql_events_always_have_one_leptonic_w_of_either_charge():
    """The Pythia settings alone: every event's H -> W W has exactly one W -> l nu and one W -> q q',
    and both W+ and W- decay leptonically (40 events: all of one charge has probability ~2e-12)."""
    spec = PROCESSES["Hqql"]
    pythia, _hook = _make_pythia(spec, BlockTask("Hqql", 0, 1, 12345, JetWindow()))
    leptonic_charges = []
    for _ in range(40):
        assert pythia.next()
        process = pythia.process
        ws = [process[i] for i in range(process.size()) if process[i].idAbs() == 24]
        assert len(ws) == 2 and ws[0].id() == -ws[1].id()
        kinds = {}
        for w in ws:
            daughters = sorted(process[j].idAbs() for j in w.daughterList())
            leptonic = daughters in ([11, 12], [13, 14], [15, 16])
            assert leptonic or (len(daughters) == 2 and all(1 <= d <= 5 for d in daughters)), daughters
            kinds[w.id()] = "l" if leptonic else "q"
        assert sorted(kinds.values()) == ["l", "q"]
        leptonic_charges.append(next(charge for charge, kind in kinds.items() if kind == "l"))
    assert set(leptonic_charges) == {24, -24}


def _p4(pt: float, eta: float, phi: float) -> list[float]:
    """A massless (px, py, pz, E)."""
    return [pt * math.cos(phi), pt * math.sin(phi), pt * math.sinh(eta), pt * math.cosh(eta)]


def _mass(p: list[float]) -> float:
    return math.sqrt(max(p[3] ** 2 - p[0] ** 2 - p[1] ** 2 - p[2] ** 2, 0.0))


def toy_higgs_event(w_plus, w_minus):
    """A hand-built event record: H -> W+ W-, the W+ copied once (a recoil), each W -> two massless
    particles given as (pid, pt, eta, phi)."""
    import pythia8mc

    event = pythia8mc.Event()
    sums = [
        [sum(c) for c in zip(*(_p4(*d[1:]) for d in products), strict=True)] for products in (w_plus, w_minus)
    ]
    higgs = [a + b for a, b in zip(*sums, strict=True)]
    event.append(90, -11, 0, 0, 0, 0, 0, 0, 0.0, 0.0, 0.0, 14000.0, 14000.0)  # 0: system
    event.append(25, -62, 0, 0, 2, 3, 0, 0, *higgs, _mass(higgs))  # 1: H
    event.append(24, -22, 1, 0, 4, 4, 0, 0, *sums[0], _mass(sums[0]))  # 2: W+, copied into 4
    event.append(-24, -22, 1, 0, 5, 6, 0, 0, *sums[1], _mass(sums[1]))  # 3: W- -> 5, 6
    event.append(24, -52, 2, 0, 7, 8, 0, 0, *sums[0], _mass(sums[0]))  # 4: W+ (last copy) -> 7, 8
    for mother, products in ((3, w_minus), (4, w_plus)):
        for pid, *kinematics in products:
            event.append(pid, 23, mother, 0, 0, 0, 0, 0, *_p4(*kinematics), 0.0)
    return event


QUARKS_UP = [(2, 200.0, 0.6, 1.1), (-1, 150.0, 0.4, 0.9)]  # W+ -> u dbar
MUON = [(13, 120.0, 0.5, 1.5), (-14, 60.0, 0.5, 2.2)]  # W- -> mu- nu_mu~


def test_semileptonic_higgs_decays_on_a_toy_event():
    (decay,) = semileptonic_higgs_decays(toy_higgs_event(QUARKS_UP, MUON))
    # rows H, W_had (the last W+ copy), W_lep, q, q', l, nu; q, q', l required
    assert decay.genparts[:, 4].astype(int).tolist() == [25, 24, -24, 2, -1, 13, -14]
    assert decay.required == (3, 4, 5)
    np.testing.assert_allclose(decay.genparts[3:, :3], [[200, 0.6, 1.1], [150, 0.4, 0.9], [120, 0.5, 1.5],
                                                       [60, 0.5, 2.2]], atol=1e-9)  # fmt: skip
    # jet axis (0.5, 1.0): dR = 0.14, 0.14, 0.5 for q, q', l; the neutrino at 1.2 does not count
    assert match_decay([decay], 0.5, 1.0, 0.8) is decay
    # axis (0.5, 0.6): both quarks inside (0.51, 0.32) but the lepton at 0.9 -> not an Hqql jet
    assert match_decay([decay], 0.5, 0.6, 0.8) is None
    # the tau counts as the charged lepton (taken before it decays)
    (tau,) = semileptonic_higgs_decays(
        toy_higgs_event(QUARKS_UP, [(15, 120.0, 0.5, 1.5), (-16, 60.0, 0.5, 2.2)])
    )
    assert tau.genparts[5, 4] == 15
    # W+ -> l+ nu and W- -> q q': the rows put the hadronic W first
    electron = [(-11, 120.0, 0.5, 1.5), (12, 60.0, 0.5, 2.2)]  # W+ -> e+ nu_e
    quarks_down = [(1, 200.0, 0.6, 1.1), (-2, 150.0, 0.4, 0.9)]  # W- -> d ubar
    (flipped,) = semileptonic_higgs_decays(toy_higgs_event(electron, quarks_down))
    assert flipped.genparts[:, 4].astype(int).tolist() == [25, -24, 24, 1, -2, -11, 12]


def test_semileptonic_higgs_decays_ignores_other_w_pairs():
    four_quarks = toy_higgs_event(QUARKS_UP, [(1, 120.0, 0.5, 1.5), (-2, 60.0, 0.5, 2.2)])
    assert semileptonic_higgs_decays(four_quarks) == [] and len(higgs_to_four_quarks(four_quarks)) == 1
    two_leptons = toy_higgs_event([(-11, 200.0, 0.6, 1.1), (12, 150.0, 0.4, 0.9)], MUON)
    assert semileptonic_higgs_decays(two_leptons) == []
