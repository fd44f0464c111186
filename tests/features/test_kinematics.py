"""Derived kinematics against hand-worked values and against `vector` on the toy files."""

import math

import awkward as ak
import numpy as np
import pytest
import uproot
import vector

from jettag.features.kinematics import jet_axis_from_particles, particle_vectors, relative_coordinates
from jettag.features.variables import VariableComputer, required_branches


def computer(px, py, pz, e, counts, jets=None):
    particles = {"part_px": np.array(px, float), "part_py": np.array(py, float),
                 "part_pz": np.array(pz, float), "part_energy": np.array(e, float)}  # fmt: skip
    return VariableComputer(particles, jets or {}, np.array(counts))


def test_hand_worked_particle():
    # px=3, py=4, pz=0, E=5: pt = 5, eta = 0, phi = atan2(4, 3); jet axis eta 0.5, phi 3.0, pt 50, E 100.
    jets = {"jet_pt": np.array([50.0]), "jet_eta": np.array([0.5]), "jet_phi": np.array([3.0]),
            "jet_energy": np.array([100.0])}  # fmt: skip
    v = computer([3], [4], [0], [5], [1], jets)
    assert v("part_pt")[0] == pytest.approx(5.0)
    assert v("part_pt_log")[0] == pytest.approx(math.log(5))
    assert v("part_e_log")[0] == pytest.approx(math.log(5))
    assert v("part_logptrel")[0] == pytest.approx(math.log(5 / 50))
    assert v("part_logerel")[0] == pytest.approx(math.log(5 / 100))
    assert v("part_deta")[0] == pytest.approx(-0.5)  # (0 - 0.5) * sign(0.5)
    assert v("part_dphi")[0] == pytest.approx(math.atan2(4, 3) - 3.0)
    assert v("part_deltaR")[0] == pytest.approx(math.hypot(-0.5, math.atan2(4, 3) - 3.0))


def test_dphi_wraps_and_deta_sign_convention():
    # particle at phi = -3.0 against a jet at phi = 3.0: -6 + 2 pi
    p = particle_vectors(
        np.array([math.cos(-3.0)]), np.array([math.sin(-3.0)]), np.array([0.0]), np.array([1.0])
    )
    deta, dphi = relative_coordinates(p, np.array([0.0]), np.array([3.0]))
    assert dphi[0] == pytest.approx(-6.0 + 2 * math.pi)
    assert deta[0] == pytest.approx(0.0)  # sign(0) counts as +1: deta = eta - 0
    # negative jet eta flips the sign: eta -1.5 against jet eta -1 -> (-1.5 + 1) * (-1) = 0.5
    pz = math.sinh(-1.5)
    p = particle_vectors(np.array([1.0]), np.array([0.0]), np.array([pz]), np.array([math.hypot(1, pz)]))
    deta, _ = relative_coordinates(p, np.array([-1.0]), np.array([0.0]))
    assert deta[0] == pytest.approx(0.5)
    # dphi lands in the half-open [-pi, pi): a difference of exactly pi maps to -pi
    p = particle_vectors(np.array([-1.0]), np.array([0.0]), np.array([0.0]), np.array([1.0]))
    _, dphi = relative_coordinates(p, np.array([0.0]), np.array([0.0]))
    assert -math.pi <= dphi[0] < math.pi


def test_derived_coordinates_match_file_values(toy_root_files):
    """The toy file stores deta/dphi computed with numpy; deriving them with vector agrees."""
    arrays = uproot.open(toy_root_files["val"])["tree"].arrays()
    counts = ak.to_numpy(ak.num(arrays.part_px))
    particles = {n: ak.to_numpy(ak.flatten(arrays[n])).astype(np.float64) for n in
                 ("part_px", "part_py", "part_pz", "part_energy")}  # fmt: skip
    jets = {n: ak.to_numpy(arrays[n]).astype(np.float64) for n in ("jet_eta", "jet_phi")}
    v = VariableComputer(particles, jets, counts)
    np.testing.assert_allclose(v("part_deta"), ak.to_numpy(ak.flatten(arrays.part_deta)), atol=2e-5)
    np.testing.assert_allclose(v("part_dphi"), ak.to_numpy(ak.flatten(arrays.part_dphi)), atol=2e-5)


def test_jet_axis_from_particles_against_vector_sum():
    rng = np.random.default_rng(3)
    counts = np.array([3, 0, 5])
    n = counts.sum()
    px, py, pz = rng.normal(0, 20, (3, n))
    e = np.sqrt(px**2 + py**2 + pz**2) + 0.1
    axis = jet_axis_from_particles(px, py, pz, e, counts)
    start = 0
    for j, c in enumerate(counts):
        total = vector.obj(px=0.0, py=0.0, pz=0.0, E=0.0)
        for i in range(start, start + c):
            total = total + vector.obj(px=px[i], py=py[i], pz=pz[i], E=e[i])
        start += c
        assert axis["jet_energy"][j] == pytest.approx(total.E)
        if c:
            assert axis["jet_pt"][j] == pytest.approx(total.pt)
            assert axis["jet_eta"][j] == pytest.approx(total.eta)
            assert axis["jet_phi"][j] == pytest.approx(total.phi)
            assert axis["jet_mass"][j] == pytest.approx(total.mass)


def test_derived_jet_axis_used_when_file_lacks_it():
    # two back-to-back-ish particles: the jet axis is their sum, computed from the particles
    v = computer([10, 5], [0, 5], [0, 0], [10, math.hypot(5, 5)], [2])
    jet_phi = math.atan2(5, 15)
    assert v("part_dphi")[0] == pytest.approx(0 - jet_phi)
    assert v("part_logptrel")[0] == pytest.approx(math.log(10 / math.hypot(15, 5)))


def test_required_branches_prefers_file_values_and_derives_the_rest():
    available = {"part_px", "part_py", "part_pz", "part_energy", "part_deta", "jet_pt", "part_charge"}
    read, missing = required_branches(["part_deta", "part_dphi", "part_logptrel", "part_charge"], available)
    assert "part_deta" in read and "jet_pt" in read and "part_charge" in read
    assert "part_dphi" not in read and not missing
    _, missing = required_branches(["part_d0", "part_isMuon"], available)
    assert missing == {"part_d0val", "part_isMuon"}


def test_jet_axis_summed_once_and_only_when_needed(monkeypatch):
    """The sum over a jet's particles is made at most once per chunk, from all particles (before the
    truncation to the leading ones), and not at all when the file carries what the features use."""
    from jettag.features import variables

    calls = []
    original = variables.jet_axis_from_particles
    monkeypatch.setattr(variables, "jet_axis_from_particles", lambda *a: calls.append(1) or original(*a))
    px, py, pz, e = [10.0, 5.0, 1.0], [0.0, 5.0, 1.0], [0.0, 0.0, 1.0], [10.0, math.hypot(5, 5), math.sqrt(3)]
    particles = {"part_px": np.array(px), "part_py": np.array(py), "part_pz": np.array(pz),
                 "part_energy": np.array(e), "part_deta": np.zeros(3), "part_dphi": np.zeros(3)}  # fmt: skip
    whole = VariableComputer(particles, {"jet_pt": np.array([20.0])}, np.array([3]))
    leading = whole.truncated({k: v[:2] for k, v in particles.items()}, np.array([2]))
    leading("part_logptrel")  # jet_pt read
    leading("part_deltaR")  # deta, dphi read
    assert calls == []
    energy = leading.jet("jet_energy")  # summed over all three particles, not the two kept
    assert energy[0] == pytest.approx(sum(e))
    leading("part_logerel"), whole.jet("jet_mass"), leading.jet("jet_eta")
    assert calls == [1]
