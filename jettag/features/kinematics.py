"""Particle and jet kinematics from four-momenta, computed with `vector`.

Everything here works on *flat* particle arrays (all particles of a chunk of jets, one after the
other) plus `counts`, the number of particles of each jet: the layout awkward arrays flatten to.
Jet-level quantities are broadcast to particles with `np.repeat(x, counts)`.

Conventions (JetClass, REFERENCE.md section 1):
- `part_deta = (eta - jet_eta) * sign(jet_eta)`, where sign(0) counts as +1;
- `part_dphi = phi - jet_phi` wrapped into [-pi, pi).
"""

from __future__ import annotations

import numpy as np
import vector

FOUR_MOMENTUM = ("part_px", "part_py", "part_pz", "part_energy")
JET_AXIS = ("jet_pt", "jet_eta", "jet_phi", "jet_energy")


def particle_vectors(px, py, pz, energy) -> vector.MomentumNumpy4D:
    return vector.array({"px": px, "py": py, "pz": pz, "E": energy})


def jet_axis_from_particles(px, py, pz, energy, counts) -> dict[str, np.ndarray]:
    """Jet pt, eta, phi, energy and mass as the four-vector sum of each jet's particles."""
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    nonempty = counts > 0
    sums = []
    for comp in (px, py, pz, energy):
        total = np.zeros(len(counts), dtype=np.float64)
        if comp.size:
            # reduceat on an empty jet would return the next jet's first value: mask those.
            total[nonempty] = np.add.reduceat(comp.astype(np.float64), starts[nonempty])
        sums.append(total)
    jet = vector.array({"px": sums[0], "py": sums[1], "pz": sums[2], "E": sums[3]})
    return {
        "jet_pt": jet.pt,
        "jet_eta": jet.eta,
        "jet_phi": jet.phi,
        "jet_energy": jet.E,
        "jet_mass": jet.mass,
    }


def relative_coordinates(
    particles: vector.MomentumNumpy4D, jet_eta, jet_phi
) -> tuple[np.ndarray, np.ndarray]:
    """(deta, dphi) of each particle with respect to its jet axis; jet arrays already per particle."""
    axis = vector.array(
        {"pt": np.ones_like(jet_eta), "eta": jet_eta, "phi": jet_phi, "mass": np.zeros_like(jet_eta)}
    )
    sign = np.where(jet_eta >= 0, 1.0, -1.0)
    deta = particles.deltaeta(axis) * sign
    dphi = particles.deltaphi(axis)
    # vector wraps into [-pi, pi]; JetClass uses the half-open interval [-pi, pi).
    dphi = np.where(dphi >= np.pi, dphi - 2 * np.pi, dphi)
    return deta, dphi
