"""Tiny input files for the tests, written with uproot / pyarrow from toy jets.

Toy jets: massless constituents spread around one prong (QCD) or three prongs (top) in the
eta-phi plane, with pT fractions from a Dirichlet distribution, so the classes are separable.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

JETCLASS_LABELS = [
    "label_QCD", "label_Hbb", "label_Hcc", "label_Hgg", "label_H4q",
    "label_Hqql", "label_Zqq", "label_Wqq", "label_Tbqq", "label_Tbl",
]  # fmt: skip


PRONGS = {"label_QCD": 1, "label_Hbb": 2, "label_Hcc": 2, "label_Hgg": 2, "label_H4q": 4, "label_Hqql": 3,
          "label_Zqq": 2, "label_Wqq": 2, "label_Tbqq": 3, "label_Tbl": 2}  # fmt: skip


def toy_jets(n_jets: int, seed: int = 0, classes=("label_QCD", "label_Tbqq")) -> dict[str, ak.Array]:
    """JetClass-schema branches for `n_jets` toy jets, drawn evenly from `classes`."""
    rng = np.random.default_rng(seed)
    cls = rng.integers(0, len(classes), n_jets)
    n_prongs = np.array([PRONGS[c] for c in classes])[cls]
    jet_pt = rng.uniform(550, 650, n_jets)
    jet_eta = rng.uniform(-2, 2, n_jets)
    jet_phi = rng.uniform(-np.pi, np.pi, n_jets)
    counts = (rng.poisson(35, n_jets) + 10 * (n_prongs - 1)).clip(2, None)

    px, py, pz, energy, charge, pid = [], [], [], [], [], []
    for i in range(n_jets):
        n = counts[i]
        prongs = n_prongs[i]
        centers = rng.normal(0, 0.25, (prongs, 2)) if prongs > 1 else np.zeros((1, 2))
        which = rng.integers(0, prongs, n)
        deta = centers[which, 0] + rng.normal(0, 0.05, n)
        dphi = centers[which, 1] + rng.normal(0, 0.05, n)
        frac = rng.dirichlet(np.full(n, 0.6))
        pt = frac * jet_pt[i]
        eta = jet_eta[i] + deta
        phi = jet_phi[i] + dphi
        order = np.argsort(-pt)
        pt, eta, phi = pt[order], eta[order], phi[order]
        px.append(pt * np.cos(phi))
        py.append(pt * np.sin(phi))
        pz.append(pt * np.sinh(eta))
        energy.append(pt * np.cosh(eta))
        c = rng.choice([-1.0, 0.0, 1.0], n)
        charge.append(c)
        pid.append(rng.integers(0, 5, n))
    flat = {k: np.concatenate(v) for k, v in
            dict(px=px, py=py, pz=pz, energy=energy, charge=charge, pid=pid).items()}  # fmt: skip

    sums = {k: np.add.reduceat(flat[k], np.cumsum(counts) - counts) for k in ("px", "py", "pz", "energy")}
    j_pt = np.hypot(sums["px"], sums["py"])
    j_eta = np.arcsinh(sums["pz"] / j_pt)
    j_phi = np.arctan2(sums["py"], sums["px"])
    j_mass = np.sqrt(np.maximum(sums["energy"] ** 2 - sums["px"] ** 2 - sums["py"] ** 2 - sums["pz"] ** 2, 0))

    p_pt = np.hypot(flat["px"], flat["py"])
    p_eta = np.arcsinh(flat["pz"] / p_pt)
    p_phi = np.arctan2(flat["py"], flat["px"])
    rep = lambda x: np.repeat(x, counts)  # noqa: E731
    sign = np.where(rep(j_eta) >= 0, 1.0, -1.0)
    deta = (p_eta - rep(j_eta)) * sign
    dphi = (p_phi - rep(j_phi) + np.pi) % (2 * np.pi) - np.pi

    def jagged(x):
        return ak.unflatten(np.asarray(x, dtype=np.float32), counts)

    neutral = flat["charge"] == 0
    branches = {
        "part_px": jagged(flat["px"]),
        "part_py": jagged(flat["py"]),
        "part_pz": jagged(flat["pz"]),
        "part_energy": jagged(flat["energy"]),
        "part_deta": jagged(deta),
        "part_dphi": jagged(dphi),
        "part_d0val": jagged(np.where(neutral, 0, rng.normal(0, 0.05, len(neutral)))),
        "part_d0err": jagged(np.where(neutral, 0, 0.01)),
        "part_dzval": jagged(np.where(neutral, 0, rng.normal(0, 0.05, len(neutral)))),
        "part_dzerr": jagged(np.where(neutral, 0, 0.01)),
        "part_charge": jagged(flat["charge"]),
        "part_isChargedHadron": jagged(~neutral),
        "part_isNeutralHadron": jagged(neutral & (flat["pid"] < 2)),
        "part_isPhoton": jagged(neutral & (flat["pid"] >= 2)),
        "part_isElectron": jagged(np.zeros(len(neutral))),
        "part_isMuon": jagged(np.zeros(len(neutral))),
        "jet_pt": j_pt.astype(np.float32),
        "jet_eta": j_eta.astype(np.float32),
        "jet_phi": j_phi.astype(np.float32),
        "jet_energy": sums["energy"].astype(np.float32),
        "jet_mass": j_mass.astype(np.float32),
        "jet_sdmass": j_mass.astype(np.float32),
        "jet_nparticles": counts.astype(np.float32),
    }
    # N-subjettiness stand-ins: fewer prongs, smaller tau_N for N >= prongs
    for n in range(1, 5):
        branches[f"jet_tau{n}"] = (rng.uniform(0.05, 0.3, n_jets) / np.where(n >= n_prongs, 3, 1)).astype(
            np.float32
        )
    for label in JETCLASS_LABELS:
        branches[label] = np.zeros(n_jets, dtype=bool)
    for k, label in enumerate(classes):
        branches[label] = cls == k
    return branches


def top_tagging_table(n_jets: int, seed: int = 0, slots: int = 60):
    """Toy jets in the original top-tagging HDF5 layout, a pandas DataFrame written independently of jettag:
    E_i PX_i PY_i PZ_i (float32, zero-padded, pT order kept), truthE, ttv and is_signal_new (1 = top).
    Write it as the original files are: `frame.to_hdf(path, key="table", mode="w")`."""
    import pandas as pd

    jets = toy_jets(n_jets, seed=seed)
    columns = {}
    for name, branch in (("E", "part_energy"), ("PX", "part_px"), ("PY", "part_py"), ("PZ", "part_pz")):
        padded = ak.fill_none(ak.pad_none(jets[branch], slots, clip=True), 0.0)
        values = ak.to_numpy(padded).astype(np.float32)
        for i in range(slots):
            columns[f"{name}_{i}"] = values[:, i]
    frame = pd.DataFrame(columns)
    frame["truthE"] = 0.0
    frame["ttv"] = 0
    frame["is_signal_new"] = np.asarray(jets["label_Tbqq"], dtype=np.int64)
    return frame


def write_root(path, branches: dict, treename: str = "tree") -> str:
    """A TTree as JetClass has it: jagged part_* branches sharing one counter, jet and label branches."""
    particles = {k[len("part_") :]: v for k, v in branches.items() if k.startswith("part_")}
    data = {k: v for k, v in branches.items() if not k.startswith("part_")}
    if particles:
        data["part"] = ak.zip(particles)
    with uproot.recreate(path) as f:
        f.mktree(treename, data)
    return str(path)


def write_parquet(path, branches: dict) -> str:
    """The converted top-tagging Parquet layout: integer `label` (1 = top), jet_* and part_* columns."""
    columns = {"label": np.asarray(branches["label_Tbqq"], dtype=np.int64)}
    for name in ("jet_pt", "jet_eta", "jet_phi", "jet_energy", "jet_mass", "jet_nparticles"):
        columns[name] = branches[name]
    for name in ("part_px", "part_py", "part_pz", "part_energy", "part_deta", "part_dphi"):
        columns[name] = branches[name]
    ak.to_parquet(ak.zip(columns, depth_limit=1), path)
    return str(path)


def run_cli(prog: str, *args: str, cwd=None, timeout: int = 600, env=None) -> subprocess.CompletedProcess:
    """Run one of jettag's installed console scripts, as a user would (`env`: extra variables)."""
    exe = Path(sys.executable).parent / prog
    env = {**os.environ, "MPLBACKEND": "Agg", "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


def load_script(name: str):
    """scripts/<name>.py as a module (the scripts are not a package)."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
