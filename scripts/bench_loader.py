"""Data-loading speed: ROOT files -> ready batches, jettag against weaver-core, on the same files in one run.

    python scripts/bench_loader.py [--files 2] [--jets-per-file 100000] [--workers 0 2] [--reps 1]
                                   [--basket 1000] [--dir DIR]

The figures of docs/performance.md: `--reps 3` (JetClass-like baskets of 1000 jets), and `--basket 100000 --reps 1
--workers 0` for files of one basket per branch, as `jettag-generate` writes them.

Writes JetClass-schema ROOT files of generated jets (10 classes, one-hot labels, ~50 particles per
jet), then times one pass over all of them, to training batches of 512 jets with the kinpid inputs
(13 features, at most 128 particles, four-vectors and mask), for

- jettag: `JetDataModule(streaming=True)` -> `JetStreamLoader` (shuffle buffer, padded batches);
- weaver-core 0.5.3: `SimpleIterDataset` with a data config written here that matches kinpid (the
  ParT repository's JetClass_kinpid.yaml layout: pf_points, pf_features, pf_vectors, pf_mask padded
  to 128), `for_training=True`, batched by a DataLoader of batch 512 as weaver's train script does,
  in its two reading modes: the default (`fetch_step=0.01`: 1% of every file per fetch, so batches
  mix all files, as jettag's do) and file by file (`fetch_by_files=True, fetch_step=1`: one whole
  file per fetch, faster but a batch then holds the jets of one file, i.e. one class for
  per-class files). The ratio is taken against the default mode.

with 0 and 2 DataLoader workers. Every timing runs in a fresh Python process (so that neither
loader's threads, caches or garbage slow the other), from creating the iterator to the last batch:
worker start-up and file opening count. Timings alternate between the loaders; with --reps > 1 the
median is reported. Needs weaver-core (test dependency: pip install -e ".[test]").
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

LABELS = ["label_QCD", "label_Hbb", "label_Hcc", "label_Hgg", "label_H4q", "label_Hqql", "label_Zqq",
          "label_Wqq", "label_Tbqq", "label_Tbl"]  # fmt: skip
# the published column order (part_deta, part_dphi last)
KINPID = ["part_pt_log", "part_e_log", "part_logptrel", "part_logerel", "part_deltaR", "part_charge",
          "part_isChargedHadron", "part_isNeutralHadron", "part_isPhoton", "part_isElectron", "part_isMuon",
          "part_deta", "part_dphi"]  # fmt: skip
PID = ["isChargedHadron", "isNeutralHadron", "isPhoton", "isElectron", "isMuon"]

WEAVER_CONFIG = """\
treename: tree
selection: null
new_variables:
  part_mask: ak.ones_like(part_energy)
  part_pt: np.hypot(part_px, part_py)
  part_pt_log: np.log(part_pt)
  part_e_log: np.log(part_energy)
  part_logptrel: np.log(part_pt/jet_pt)
  part_logerel: np.log(part_energy/jet_energy)
  part_deltaR: np.hypot(part_deta, part_dphi)
preprocess:
  method: manual
  data_fraction: 0.5
inputs:
  pf_points:
    length: 128
    pad_mode: wrap
    vars:
      - [part_deta, null]
      - [part_dphi, null]
  pf_features:
    length: 128
    pad_mode: wrap
    vars:
      - [part_pt_log, 1.7, 0.7]
      - [part_e_log, 2.0, 0.7]
      - [part_logptrel, -4.7, 0.7]
      - [part_logerel, -4.7, 0.7]
      - [part_deltaR, 0.2, 4.0]
      - [part_charge, null]
      - [part_isChargedHadron, null]
      - [part_isNeutralHadron, null]
      - [part_isPhoton, null]
      - [part_isElectron, null]
      - [part_isMuon, null]
      - [part_deta, null]
      - [part_dphi, null]
  pf_vectors:
    length: 128
    pad_mode: wrap
    vars:
      - [part_px, null]
      - [part_py, null]
      - [part_pz, null]
      - [part_energy, null]
  pf_mask:
    length: 128
    pad_mode: constant
    vars:
      - [part_mask, null]
labels:
  type: simple
  value: [LABELS]
observers: []
weights: null
""".replace("[LABELS]", "[" + ", ".join(LABELS) + "]")


def generate(path: Path, n: int, seed: int, basket: int = 1000) -> None:
    """Collimated jets of 500-1000 GeV with ~50 pT-ordered constituents, JetClass branches and labels."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(50, n).clip(2, 128 + 40)
    total = counts.sum()
    jet_pt = rng.uniform(500, 1000, n)
    jet_eta = rng.uniform(-2, 2, n)
    jet_phi = rng.uniform(-np.pi, np.pi, n)
    starts = np.cumsum(counts) - counts
    frac = rng.exponential(1.0, total)
    frac /= np.repeat(np.add.reduceat(frac, starts), counts)
    # pT order within each jet
    order = np.lexsort((-frac, np.repeat(np.arange(n), counts)))
    frac = frac[order]
    pt = frac * np.repeat(jet_pt, counts)
    deta = rng.normal(0, 0.15, total)
    dphi = rng.normal(0, 0.15, total)
    eta = np.repeat(jet_eta, counts) + deta
    phi = np.repeat(jet_phi, counts) + dphi
    px, py, pz, energy = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta), pt * np.cosh(eta)
    jet_energy = np.add.reduceat(energy, starts)
    sign = np.where(np.repeat(jet_eta, counts) >= 0, 1.0, -1.0)
    charge = rng.choice([-1.0, 0.0, 1.0], total)
    kind = rng.integers(0, 5, total)

    def jagged(x):
        return ak.unflatten(np.asarray(x, dtype=np.float32), counts)

    particles = {"px": jagged(px), "py": jagged(py), "pz": jagged(pz), "energy": jagged(energy),
                 "deta": jagged(deta * sign), "dphi": jagged(dphi), "charge": jagged(charge)}  # fmt: skip
    for k, name in enumerate(PID):
        particles[name] = jagged(kind == k)
    cls = rng.integers(0, len(LABELS), n)
    branches = {"part": ak.zip(particles), "jet_pt": jet_pt.astype(np.float32), "jet_eta": jet_eta.astype(np.float32),
                "jet_phi": jet_phi.astype(np.float32), "jet_energy": jet_energy.astype(np.float32),
                "jet_nparticles": counts.astype(np.float32)}  # fmt: skip
    for k, label in enumerate(LABELS):
        branches[label] = cls == k
    # written in baskets of `basket` jets, as ROOT writes files (one basket per flush), not one per branch
    with uproot.recreate(path) as f:
        tree = None
        for start in range(0, n, basket):
            part = {k: v[start : start + basket] for k, v in branches.items()}
            if tree is None:
                tree = f.mktree(
                    "tree", {k: v.type if isinstance(v, ak.Array) else v.dtype for k, v in part.items()}
                )
            tree.extend(part)


def time_jettag(files: list[str], workers: int) -> tuple[float, int]:
    from jettag.data import JetDataModule
    from jettag.data.streaming import JetStreamLoader
    from jettag.features.sets import FeatureSet

    features = FeatureSet.from_config({
        "name": "kinpid", "max_particles": 128,
        "particle_features": [["part_pt_log", 1.7, 0.7], ["part_e_log", 2.0, 0.7], ["part_logptrel", -4.7, 0.7],
                              ["part_logerel", -4.7, 0.7], ["part_deltaR", 0.2, 4.0], *KINPID[5:]],
    })  # fmt: skip
    dm = JetDataModule(features, train_files=files, labels=LABELS, batch_size=512, piece_size=5000,
                       shuffle_buffer=50_000, streaming=True, progress=False, num_workers=workers)  # fmt: skip
    loader = JetStreamLoader(dm.stream("train"), num_workers=workers)
    start, jets = time.perf_counter(), 0
    for batch in loader:
        jets += len(batch)
    return time.perf_counter() - start, jets


def time_weaver(files: list[str], workers: int, config: str, by_files: bool) -> tuple[float, int]:
    from torch.utils.data import DataLoader
    from weaver.utils.dataset import SimpleIterDataset

    options = (
        {"fetch_by_files": True, "fetch_step": 1}
        if by_files
        else {"fetch_by_files": False, "fetch_step": 0.01}
    )
    dataset = SimpleIterDataset({"_": files}, config, for_training=True, **options)
    loader = DataLoader(dataset, batch_size=512, drop_last=True, pin_memory=False, num_workers=workers)
    start, jets = time.perf_counter(), 0
    for X, y, _ in loader:
        jets += len(y["_label_"])
        assert X["pf_features"].shape[1:] == (13, 128)
    return time.perf_counter() - start, jets


def measure(which: str, files: list[str], workers: int, config: str) -> float:
    """jets/s of one pass, timed in a fresh process."""
    command = [
        sys.executable,
        __file__,
        "--one",
        which,
        "--workers",
        str(workers),
        "--config",
        config,
        *files,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    seconds, jets = result.stdout.split()[-2:]
    return int(jets) / float(seconds)


def one(which: str, files: list[str], workers: int, config: str) -> None:
    import logging

    logging.getLogger("weaver").setLevel(logging.WARNING)
    if which == "jettag":
        seconds, jets = time_jettag(files, workers)
        assert jets == sum(uproot.open(f)["tree"].num_entries for f in files)  # every jet once
    else:
        seconds, jets = time_weaver(files, workers, config, by_files=which == "weaver-by-files")
    print(seconds, jets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--config", default=None, help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--files", type=int, default=2)
    parser.add_argument("--jets-per-file", type=int, default=100_000, help="JetClass files hold 100k jets")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--basket", type=int, default=1000, help="jets per ROOT basket in the written files")
    parser.add_argument(
        "--dir", default=None, help="where to write the files (default: a temporary directory)"
    )
    args = parser.parse_args()
    if args.one:
        return one(args.one, args.paths, args.workers[0], args.config)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.dir or tmp)
        base.mkdir(parents=True, exist_ok=True)
        files = []
        for i in range(args.files):
            path = base / f"bench_{i}.root"
            if not path.exists():
                generate(path, args.jets_per_file, seed=i, basket=args.basket)
            files.append(str(path))
        config = base / "weaver_kinpid.yaml"
        config.write_text(WEAVER_CONFIG)
        total = args.files * args.jets_per_file
        print(f"{args.files} files x {args.jets_per_file} jets ({total} jets, {sum(os.path.getsize(f) for f in files) / 1e6:.0f} MB); "
              f"kinpid, 128 particles, batch 512; {os.cpu_count()} cores")  # fmt: skip
        print(
            f"{'workers':>7} {'jettag':>8} {'weaver':>8} {'ratio':>6} {'weaver by files':>16} {'ratio':>6}   (jets/s)"
        )
        for workers in args.workers:
            ours, theirs, by_files = [], [], []
            for _ in range(args.reps):
                theirs.append(measure("weaver", files, workers, str(config)))
                ours.append(measure("jettag", files, workers, str(config)))
                by_files.append(measure("weaver-by-files", files, workers, str(config)))
            a, b, c = statistics.median(ours), statistics.median(theirs), statistics.median(by_files)
            print(f"{workers:>7} {a:>8.0f} {b:>8.0f} {a / b:>6.1f} {c:>16.0f} {a / c:>6.1f}", flush=True)


if __name__ == "__main__":
    main()
