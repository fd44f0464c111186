"""The generator's JetClass branches from hand-built particle tables (no Pythia): the jet axis,
part_deta and part_dphi against `vector`, on a jet where the conventions matter (eta < 0, particles
on both sides of phi = +-pi)."""

from __future__ import annotations

import math

import awkward as ak
import numpy as np
import pytest
import vector

from jettag.generate.branches import BRANCHES, jet_arrays


def particle_table(particles) -> np.ndarray:
    """(n, 9) rows px py pz E pid charge x y z from (pt, eta, phi, mass, pid, charge) tuples."""
    rows = []
    for pt, eta, phi, mass, pid, charge in particles:
        p = vector.obj(pt=pt, eta=eta, phi=phi, mass=mass)
        rows.append((p.px, p.py, p.pz, p.E, pid, charge, 0.0, 0.0, 0.0))
    return np.array(rows)


JETS = [
    # eta < 0, so deta flips sign; the second particle sits across phi = +-pi from the axis (phi ~ 3.11)
    particle_table(
        [(80, -1.5, 2.9, 0.94, 2112, 0), (200, -1.2, 3.1, 0.14, 211, 1), (150, -1.0, -3.05, 0, 22, 0)]
    ),
    particle_table([(20, 0.3, 0.1, 0.0, 22, 0), (300, 0.7, -0.2, 0.14, -211, -1)]),
]


def test_axis_deta_dphi_against_vector():
    arrays = jet_arrays(JETS, [np.zeros((0, 5))] * len(JETS), "label_QCD")
    assert set(arrays) | {"jet_sdmass", "jet_tau1", "jet_tau2", "jet_tau3", "jet_tau4"} == set(BRANCHES)
    wrapped = False
    for j, table in enumerate(JETS):
        parts = [vector.obj(px=r[0], py=r[1], pz=r[2], E=r[3]) for r in table]
        jet = parts[0] + parts[1]
        for p in parts[2:]:
            jet = jet + p
        assert arrays["jet_pt"][j] == pytest.approx(jet.pt, rel=1e-6)
        assert arrays["jet_eta"][j] == pytest.approx(jet.eta, abs=1e-6)
        assert arrays["jet_phi"][j] == pytest.approx(jet.phi, abs=1e-6)
        assert arrays["jet_mass"][j] == pytest.approx(jet.mass, rel=1e-5)
        sign = 1.0 if jet.eta >= 0 else -1.0
        deta, dphi = ak.to_numpy(arrays["part_deta"][j]), ak.to_numpy(arrays["part_dphi"][j])
        for k, i in enumerate(sorted(range(len(parts)), key=lambda i: -parts[i].pt)):  # written pT-ordered
            assert deta[k] == pytest.approx((parts[i].eta - jet.eta) * sign, abs=1e-6)
            assert dphi[k] == pytest.approx(parts[i].deltaphi(jet), abs=1e-6)
            assert -math.pi <= dphi[k] < math.pi
            wrapped |= abs(parts[i].phi - jet.phi) > math.pi
    assert wrapped, "no particle across phi = +-pi: the dphi wrap went untested"
