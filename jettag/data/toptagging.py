"""The original top-tagging HDF5 table (pandas, `table`: columns `E_i PX_i PY_i PZ_i`, zero-padded and
pT-ordered, `is_signal_new`) turned into JetClass-like jets, chunk by chunk (`JetFile` reads it)."""

from __future__ import annotations

from collections.abc import Sequence

import awkward as ak
import numpy as np

from jettag.errors import DataError
from jettag.features.kinematics import jet_axis_from_particles, particle_vectors, relative_coordinates

# What the top-tagging HDF5 table becomes (`top_table_to_jets`).
TOP_HDF5_BRANCHES = (
    "part_px", "part_py", "part_pz", "part_energy", "part_deta", "part_dphi",
    "jet_pt", "jet_eta", "jet_phi", "jet_energy", "jet_mass", "jet_nparticles",
    "label", "label_QCD", "label_Tbqq",
)  # fmt: skip


def hdf5_num_particles(columns: Sequence[str], path: str) -> int:
    """Number of particle slots of a top-tagging table (columns E_i, PX_i, PY_i, PZ_i, i = 0..n-1)."""
    names = set(columns)
    n = 0
    while all(f"{c}_{n}" in names for c in ("E", "PX", "PY", "PZ")):
        n += 1
    if n == 0 or "is_signal_new" not in names:
        raise DataError(
            f"'{path}' is an HDF5 table without the top-tagging columns E_0, PX_0, PY_0, PZ_0 and is_signal_new; "
            "jettag reads that layout only (convert other tables to Parquet or ROOT)."
        )
    return n


def top_table_to_jets(frame, num_particles: int) -> ak.Array:
    """Rows of the top-tagging table -> JetClass-like jagged jets (zero-energy padding slots dropped).

    Also gives the jet axis and mass summed from the constituents, `part_deta`/`part_dphi` in the
    JetClass convention, the integer `label` (1 = top) and the one-hot `label_QCD`, `label_Tbqq`.
    """

    def block(prefix: str) -> np.ndarray:
        names = [f"{prefix}_{i}" for i in range(num_particles)]
        return frame[names].to_numpy(dtype=np.float64)

    energy, px, py, pz = block("E"), block("PX"), block("PY"), block("PZ")
    real = energy > 0
    counts = real.sum(axis=1)
    e, x, y, z = (a[real] for a in (energy, px, py, pz))  # row-major: jet by jet, pT order kept
    # the JetClass conventions (jet axis = four-vector sum, deta sign, dphi wrap): jettag.features.kinematics
    axis = jet_axis_from_particles(x, y, z, e, counts)
    deta, dphi = relative_coordinates(
        particle_vectors(x, y, z, e), np.repeat(axis["jet_eta"], counts), np.repeat(axis["jet_phi"], counts)
    )
    label = frame["is_signal_new"].to_numpy().astype(np.int64)

    def jagged(a: np.ndarray) -> ak.Array:
        return ak.unflatten(a.astype(np.float32), counts)

    return ak.Array({
        "part_px": jagged(x), "part_py": jagged(y), "part_pz": jagged(z), "part_energy": jagged(e),
        "part_deta": jagged(deta), "part_dphi": jagged(dphi),
        **{name: axis[name].astype(np.float32) for name in ("jet_pt", "jet_eta", "jet_phi", "jet_energy", "jet_mass")},
        "jet_nparticles": counts.astype(np.float32),
        "label": label, "label_QCD": label == 0, "label_Tbqq": label == 1,
    })  # fmt: skip
