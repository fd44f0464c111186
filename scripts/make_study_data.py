"""The pretraining set and the top/QCD study sets, generated once with every core and then reused.

    python scripts/make_study_data.py --out data/study            # ~1-2 h on 2 cores, once
    python scripts/make_study_data.py --out data/study --only topqcd

Writes, with `jettag-generate` (Pythia8 + FastJet, JetClass schema, jet pT 550-650 GeV):

- `pretrain/multi_NN.root`: the pretraining set, the ten JetClass classes in equal numbers, in
  `--pretrain-parts` files of `--pretrain-per-class` jets per class each (default 10 x 10 x 1,000 =
  100,000 jets), and `pretrain/multi_val.root` (2,000 jets) to validate the pretraining;
- `topqcd/pool_N.root`: the labelled top (t -> bqq') / QCD pool the study draws its budgets from
  (default 3 x 10,000 jets), `topqcd/val.root` (5,000) and `topqcd/test_N.root` (2 x 12,000 jets: 12,000
  QCD), with seeds of their own, so no jet is in two sets.

Every file is generated in its own call with its own seed and written when done (under a temporary
name, renamed at the end), next to `<file>.json`, the arguments it was made with and the SHA-256 of its
jets (`content_sha256`, over every branch's values, not the ROOT file's bytes): a second run skips
every file whose arguments are unchanged, so an interrupted run continues where it stopped, and a
changed setting remakes only the files it touches. Jets depend only on the seed, not on the number of
workers or the machine, so the sets can be remade on another machine and `finetune_study.py` checks
the hashes against the ones its results were made with. Prints each file's list as the `data.*_files` override the study and `jettag-train` take.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path


def plan(args) -> list[tuple[str, list[str]]]:
    """(relative path, jettag-generate arguments) of every file, the top/QCD sets first (they are
    needed first: the from-scratch runs of the study start on them)."""
    files = []
    if args.only in (None, "topqcd"):
        for i in range(args.pool_parts):
            files.append((f"topqcd/pool_{i}.root", ["-n", str(args.pool_per_class), "--seed", str(2000 + i)]))
        files.append(("topqcd/val.root", ["-n", str(args.val_per_class), "--seed", "2100"]))
        for i in range(args.test_parts):
            files.append((f"topqcd/test_{i}.root", ["-n", str(args.test_per_class), "--seed", str(2200 + i)]))
    if args.only in (None, "pretrain"):
        multi = ["--classes", "all"]
        files.append(("pretrain/multi_val.root", [*multi, "-n", "200", "--seed", "1999"]))
        for i in range(args.pretrain_parts):
            files.append(
                (
                    f"pretrain/multi_{i:02d}.root",
                    [*multi, "-n", str(args.pretrain_per_class), "--seed", str(1000 + i)],
                )
            )
    return files


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    parser.add_argument("--out", default="data/study", help="directory of the sets")
    parser.add_argument(
        "--only", choices=["topqcd", "pretrain"], default=None, help="make one of the two only"
    )
    parser.add_argument("--workers", type=int, default=None, help="processes (default: every core)")
    parser.add_argument("--pretrain-parts", type=int, default=10)
    parser.add_argument("--pretrain-per-class", type=int, default=1000, help="jets per class and file")
    parser.add_argument("--pool-parts", type=int, default=3)
    parser.add_argument(
        "--pool-per-class", type=int, default=5000, help="top and QCD jets each, per pool file"
    )
    parser.add_argument("--val-per-class", type=int, default=2500)
    parser.add_argument("--test-parts", type=int, default=2)
    parser.add_argument("--test-per-class", type=int, default=6000)
    return parser.parse_args(argv)


def content_hash(path: Path) -> str:
    """SHA-256 of the jets of a JetClass ROOT file: every branch (sorted by name), its values and, for
    the per-particle ones, the particles per jet; the same jets give the same hash in any ROOT file."""
    import awkward as ak
    import numpy as np
    import uproot

    digest = hashlib.sha256()
    with uproot.open(path) as file:
        tree = file["tree"]
        for name in sorted(tree.keys()):
            values = tree[name].array(library="ak")
            digest.update(name.encode())
            if values.ndim > 1:
                digest.update(ak.to_numpy(ak.num(values, axis=1)).astype(np.int64).tobytes())
            digest.update(np.ascontiguousarray(ak.to_numpy(ak.flatten(values, axis=None))).tobytes())
    return digest.hexdigest()


def make(path: Path, arguments: list[str], workers: int | None) -> bool:
    """Generate `path` unless it exists with the same arguments; True if it was generated now."""
    from jettag.generate.cli import generate

    manifest = path.with_suffix(".json")
    record = {"arguments": arguments, "generator": "jettag-generate"}
    if path.is_file() and manifest.is_file():
        stored = json.loads(manifest.read_text())
        if stored.get("arguments") == arguments:
            if "content_sha256" not in stored:  # made before the hashes were recorded
                stored["content_sha256"] = content_hash(path)
                manifest.write_text(json.dumps(stored, indent=1) + "\n")
            return False
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial.root")
    partial.unlink(missing_ok=True)
    start = time.perf_counter()
    extra = ["--workers", str(workers)] if workers else []
    generate([*arguments, *extra, "-o", str(partial), "--compression", "zlib"])
    os.replace(partial, path)
    record["seconds"] = round(time.perf_counter() - start)
    record["content_sha256"] = content_hash(path)
    manifest.write_text(json.dumps(record, indent=1) + "\n")
    return True


def main(argv=None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    files = plan(args)
    start = time.perf_counter()
    for k, (relative, arguments) in enumerate(files, 1):
        path = out / relative
        print(
            f"[{k}/{len(files)}] {path}: jettag-generate {' '.join(arguments)}", file=sys.stderr, flush=True
        )
        made = make(path, arguments, args.workers)
        if not made:
            print("  already there with these arguments: reused", file=sys.stderr, flush=True)
    print(f"done in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    groups = {
        "pretraining (data.train_files)": sorted(out.glob("pretrain/multi_[0-9]*.root")),
        "pretraining validation (data.val_files)": [out / "pretrain/multi_val.root"],
        "labelled top/QCD pool": sorted(out.glob("topqcd/pool_*.root")),
        "top/QCD validation": [out / "topqcd/val.root"],
        "top/QCD test": sorted(out.glob("topqcd/test_*.root")),
    }
    for name, paths in groups.items():
        present = [str(p) for p in paths if p.is_file()]
        if present:
            print(f"{name}: [{','.join(present)}]")


if __name__ == "__main__":
    main()
