"""jettag-generate: Pythia8 + FastJet jets written as JetClass-schema ROOT files.

    jettag-generate -n 5000 -o jets.root                       # 5000 top and 5000 QCD jets
    jettag-generate -n 5000 -o jets.root --split 0.7 0.1 0.2   # jets_train/val/test.root
    jettag-generate -n 200 -o qcd.root --classes QCD --pt-min 300 --pt-max 400 --seed 7
    jettag-generate -n 1000 -o multi.root --classes all         # the ten JetClass classes

The jets depend only on the classes, the number of jets, the seed and the window, not on the
number of worker processes.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from jettag.cli.errors import report_user_errors
from jettag.errors import ConfigError
from jettag.generate.driver import DEFAULT_BLOCK_SIZE, GeneratedJets, generate_jets
from jettag.generate.processes import GENERATED_CLASSES, resolve_classes
from jettag.generate.writer import COMPRESSIONS, check_output_path, write_jetclass_root

SPLIT_NAMES = ("train", "val", "test")


def split_paths(output: str, fractions: list[float] | None) -> list[str]:
    """`output` itself, or <stem>_train/_val/_test<suffix> for a split into two or three parts."""
    if not fractions:
        return [output]
    path = Path(output)
    return [
        str(path.with_name(f"{path.stem}_{name}{path.suffix or '.root'}"))
        for name in SPLIT_NAMES[: len(fractions)]
    ]


def split_bounds(n_jets: int, fractions: list[float]) -> list[tuple[int, int]]:
    """Consecutive [start, stop) ranges of the (already shuffled) jets, in proportion to `fractions`."""
    if not 2 <= len(fractions) <= 3 or any(f <= 0 for f in fractions):
        raise ConfigError(
            f"--split takes two or three positive fractions (train val [test]), not {fractions}."
        )
    edges = np.rint(np.cumsum([0.0, *fractions]) / sum(fractions) * n_jets).astype(int)
    bounds = list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))
    if any(stop <= start for start, stop in bounds):
        raise ConfigError(f"--split {fractions} leaves a part without jets; generate more jets (-n).")
    return bounds


def take(jets: GeneratedJets, start: int, stop: int) -> dict:
    return {name: values[start:stop] for name, values in jets.arrays.items()}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="jettag-generate",
        description="Generate the ten JetClass classes (QCD, H -> bb/cc/gg/4q/l nu qq', Z/W -> qq, "
        "t -> bqq', t -> blnu) with Pythia8 + FastJet (anti-kT R=0.8, 14 TeV) and write them as "
        "JetClass-schema ROOT files; each class keeps only jets that pass its truth matching "
        "(jettag/generate/processes.py, PROCESSES).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("-n", "--jets-per-class", type=int, default=1000, help="jets of each class")
    parser.add_argument("-o", "--output", default="jets.root", help="output ROOT file")
    parser.add_argument("--classes", nargs="+", default=["Tbqq", "QCD"], choices=[*GENERATED_CLASSES, "all"],
                        help="classes to generate (all: the ten, in JetClass order); each gets its one-hot "
                        "label_<class> branch")  # fmt: skip
    parser.add_argument("--seed", type=int, default=1, help="random seed (the jets depend only on it)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all CPU cores)")
    parser.add_argument("--pt-min", type=float, default=550.0, help="jet pT lower edge, GeV")
    parser.add_argument("--pt-max", type=float, default=650.0, help="jet pT upper edge, GeV")
    parser.add_argument("--eta-max", type=float, default=2.0, help="jet |eta| upper edge")
    parser.add_argument("--split", nargs="+", type=float, default=None, metavar="FRACTION",
                        help="write train/val[/test] files <stem>_train.root ... in these proportions")  # fmt: skip
    parser.add_argument("--compression", default="lzma", choices=COMPRESSIONS, help="ROOT compression")
    parser.add_argument("--mantissa-bits", type=int, default=None,
                        help="round continuous particle branches to this many mantissa bits (float32: 23) "
                        "for smaller files, as ROOT's Float16_t does")  # fmt: skip
    parser.add_argument("--no-aux", action="store_true", help="leave out the aux_genpart_* truth branches")
    parser.add_argument("--block-size", type=int, default=DEFAULT_BLOCK_SIZE, help=argparse.SUPPRESS)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    return parser.parse_args(argv)


def summary(jets: GeneratedJets, written: list[tuple[str, int, int]]) -> str:
    lines = [f"generated {len(jets)} jets in {jets.seconds:.0f} s"]
    for name, s in jets.stats.items():
        lines.append(
            f"  {name:5s} {s.jets} jets from {s.events} events ({s.jets / max(s.events, 1):.2f} per event); "
            f"outside the window {s.outside_window}, unmatched {s.unmatched} ({100 * s.unmatched_fraction:.0f}%), "
            f"failed events {s.failed_events}; {s.jets_per_second:.1f} jets/s per core"
        )
    for path, n, size in written:
        lines.append(f"  wrote {path}: {n} jets, {size / 1e6:.2f} MB")
    return "\n".join(lines)


def generate(argv: list[str] | None = None) -> list[str]:
    """Run jettag-generate with the command-line arguments `argv`; returns the paths written."""
    args = parse_args(argv)
    paths = split_paths(os.path.expanduser(args.output), args.split)
    for path in paths:
        check_output_path(path)  # before minutes of generation, not after
    if args.split:
        split_bounds(args.jets_per_class * len(resolve_classes(args.classes)), args.split)
    jets = generate_jets(
        args.classes,
        args.jets_per_class,
        seed=args.seed,
        workers=args.workers,
        pt_min=args.pt_min,
        pt_max=args.pt_max,
        eta_max=args.eta_max,
        progress=not args.quiet,
        block_size=args.block_size,
    )
    bounds = split_bounds(len(jets), args.split) if args.split else [(0, len(jets))]
    written = []
    for path, (start, stop) in zip(paths, bounds, strict=True):
        size = write_jetclass_root(path, take(jets, start, stop), args.compression,
                                   mantissa_bits=args.mantissa_bits, aux=not args.no_aux)  # fmt: skip
        written.append((path, stop - start, size))
    if not args.quiet:
        print(summary(jets, written), file=sys.stderr)
    return paths


@report_user_errors("jettag-generate")
def main(argv: list[str] | None = None) -> None:
    generate(argv)


if __name__ == "__main__":
    main()
