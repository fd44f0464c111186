"""The JetClass branches the generator writes: their names, and their values for a block of jets
from per-jet particle tables (kinematics, impact parameters, particle flags, labels, generator
truth; the soft-drop mass and N-subjettiness with FastJet contrib)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import awkward as ak
import numpy as np

from jettag.features.kinematics import jet_axis_from_particles, particle_vectors, relative_coordinates
from jettag.generate.backends import import_fastjet, silence_fastjet_banner
from jettag.generate.processes import JET_RADIUS
from jettag.jetclass import JETCLASS_LABELS as LABEL_BRANCHES

PARTICLE_FIELDS = (
    "px", "py", "pz", "energy", "deta", "dphi", "d0val", "d0err", "dzval", "dzerr", "charge",
    "isChargedHadron", "isNeutralHadron", "isPhoton", "isElectron", "isMuon",
)  # fmt: skip
JET_BRANCHES = (
    "jet_pt", "jet_eta", "jet_phi", "jet_energy", "jet_mass", "jet_nparticles",
    "jet_sdmass", "jet_tau1", "jet_tau2", "jet_tau3", "jet_tau4",
)  # fmt: skip
AUX_FIELDS = ("pt", "eta", "phi", "mass", "pid")
PARTICLE_BRANCHES = tuple(f"part_{name}" for name in PARTICLE_FIELDS)
AUX_BRANCHES = tuple(f"aux_genpart_{name}" for name in AUX_FIELDS)
BRANCHES = PARTICLE_BRANCHES + JET_BRANCHES + LABEL_BRANCHES + AUX_BRANCHES

# columns of the per-jet particle tables (one row per particle; GeV, mm)
PX, PY, PZ, E, PID, CHARGE, X, Y, Z = range(9)


def jet_arrays(
    constituents: Sequence[np.ndarray], genparts: Sequence[np.ndarray], label: str
) -> dict[str, Any]:
    """JetClass branches (all but jet_sdmass and jet_tau*) from per-jet particle tables.

    The jet four-vector is the sum of its constituents (anti-kT E-scheme), and part_deta / part_dphi
    are taken with respect to it; both as the loader computes them (`jettag.features.kinematics`).
    Impact parameters are the straight-line ones, from the particle's production vertex, w.r.t. the
    beam line through the origin: d0 = (x py - y px) / pT, dz = z - (x px + y py) pz / pT^2 (mm; 0
    for neutrals).
    """
    counts = np.array([len(c) for c in constituents], dtype=np.int64)
    n_jets = len(counts)
    ordered = []
    for table in constituents:
        pt = np.hypot(table[:, PX], table[:, PY])
        ordered.append(table[np.argsort(-pt, kind="stable")])
    flat = np.concatenate(ordered) if ordered else np.zeros((0, 9))
    px, py, pz, energy = flat[:, PX], flat[:, PY], flat[:, PZ], flat[:, E]
    pt = np.hypot(px, py)
    axis = jet_axis_from_particles(px, py, pz, energy, counts)
    # vector gives a spacelike sum (a one-photon jet, by rounding) a negative mass; JetClass's are >= 0
    jet_mass = np.maximum(axis["jet_mass"], 0.0)
    deta, dphi = relative_coordinates(
        particle_vectors(px, py, pz, energy),
        np.repeat(axis["jet_eta"], counts),
        np.repeat(axis["jet_phi"], counts),
    )
    charge = flat[:, CHARGE]
    pid = np.abs(flat[:, PID])
    charged = charge != 0
    x, y, z = flat[:, X], flat[:, Y], flat[:, Z]
    d0 = np.where(charged, (x * py - y * px) / pt, 0.0)
    dz = np.where(charged, z - (x * px + y * py) * pz / pt**2, 0.0)
    is_electron, is_muon, is_photon = pid == 11, pid == 13, pid == 22
    lepton_or_photon = is_electron | is_muon | is_photon
    particle_columns = {
        "px": px,
        "py": py,
        "pz": pz,
        "energy": energy,
        "deta": deta,
        "dphi": dphi,
        "d0val": d0,
        "d0err": np.zeros_like(d0),
        "dzval": dz,
        "dzerr": np.zeros_like(dz),
        "charge": charge,
        "isChargedHadron": charged & ~lepton_or_photon,
        "isNeutralHadron": ~charged & ~lepton_or_photon,
        "isPhoton": is_photon,
        "isElectron": is_electron,
        "isMuon": is_muon,
    }
    arrays: dict[str, Any] = {
        f"part_{name}": ak.unflatten(np.asarray(column, dtype=np.float32), counts)
        for name, column in particle_columns.items()
    }
    jets = dict(pt=axis["jet_pt"], eta=axis["jet_eta"], phi=axis["jet_phi"], energy=axis["jet_energy"],
                mass=jet_mass, nparticles=counts)  # fmt: skip
    arrays.update({f"jet_{name}": np.asarray(v, dtype=np.float32) for name, v in jets.items()})
    for branch in LABEL_BRANCHES:
        arrays[branch] = np.full(n_jets, branch == label, dtype=bool)
    aux_counts = np.array([len(g) for g in genparts], dtype=np.int64)
    aux = (
        np.concatenate(genparts).reshape(-1, len(AUX_FIELDS)) if genparts else np.zeros((0, len(AUX_FIELDS)))
    )
    for k, name in enumerate(AUX_FIELDS):
        arrays[f"aux_genpart_{name}"] = ak.unflatten(aux[:, k].astype(np.float32), aux_counts)
    return arrays


def substructure(constituents: Sequence[np.ndarray], radius: float = JET_RADIUS) -> dict[str, np.ndarray]:
    """Soft-drop mass (beta=0, zcut=0.1) and N-subjettiness tau_1..4 (beta=1) with FastJet contrib.

    Soft drop declusters the constituents reclustered with C/A into one jet (R large enough that
    all constituents merge). tau_N uses the normalized measure with R0 = `radius` and N exclusive
    kT subjets as axes (no axis minimisation).
    """
    n_jets = len(constituents)
    if n_jets == 0:
        return {
            name: np.zeros(0, dtype=np.float32)
            for name in ("jet_sdmass", "jet_tau1", "jet_tau2", "jet_tau3", "jet_tau4")
        }
    fastjet = import_fastjet()
    silence_fastjet_banner(fastjet)
    counts = [len(c) for c in constituents]
    flat = np.concatenate(constituents)
    p4 = ak.zip({name: ak.unflatten(flat[:, k], counts) for k, name in enumerate(("px", "py", "pz", "E"))})
    sequence = fastjet.ClusterSequence(p4, fastjet.JetDefinition(fastjet.cambridge_algorithm, 10.0))
    groomed = sequence.exclusive_jets_softdrop_grooming(njets=1, beta=0.0, symmetry_cut=0.1, R0=radius)
    taus = sequence.njettiness(
        measure_definition="NormalizedMeasure",
        axes_definition="KT_Axes",
        njets=[1, 2, 3, 4],
        beta=1.0,
        R0=radius,
    )
    taus = np.asarray(ak.to_numpy(taus), dtype=np.float64).reshape(n_jets, 4)
    out = {"jet_sdmass": np.asarray(ak.to_numpy(groomed.msoftdrop), dtype=np.float32).reshape(n_jets)}
    for n in range(4):
        out[f"jet_tau{n + 1}"] = taus[:, n].astype(np.float32)
    return out
