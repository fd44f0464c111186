"""Peak resident memory of what a physicist runs, next to weaver-core's where it has the same job.

    python scripts/bench_memory.py [--jets 1000000] [--dir DIR] [--train-args trainer.max_epochs=2]

Each figure is the peak resident set (`ru_maxrss`, as `/usr/bin/time -v` reports it) of a fresh
process doing one job, imports included:

1. `jettag-train` with no arguments (the default run: the shipped sample, small ParT, 10 epochs, test
   and report), and its resident memory after each epoch (from `metrics.json`: growth from epoch 2
   to the last);
2. `jettag-predict` of that run over a ROOT file of `--jets` jets (the shipped test sample repeated to
   that size, written in baskets of 1,000 jets as ROOT writes them);
3. `jettag.load(run).predict(file)` over the same file, from Python;
4. a reference-size ParT (embed 128/512/128, pair 64/64/64, 8 + 2 blocks, kinpid inputs) training on
   batches of 128 jets of the shipped sample (forward, cross-entropy, backward, AdamW), 8 steps, jettag
   and weaver-core 0.5.3 (as `scripts/bench_models.py` feeds each);
5. the same models scoring those jets (no gradient), jettag and weaver-core.

Targets of jettag (issue 16): rows 1-3 at most 1.0 GB, growth from epoch 2 to the last within 50 MB.
Needs weaver-core for rows 4-5 (a test dependency: pip install -e ".[test]").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def peak_of(command: list[str], cwd: Path | None = None) -> tuple[float, float]:
    """(peak resident MiB of `command` run in a fresh process, wall seconds); it must succeed."""
    wrapper = (
        "import resource, subprocess, sys\n"
        "code = subprocess.run(sys.argv[1:]).returncode\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print('PEAK_KB', peak, file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", wrapper, *command], cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"bench_memory: {' '.join(command)} failed:\n{out.stderr[-3000:]}")
    line = [x for x in out.stderr.splitlines() if x.startswith("PEAK_KB")][-1]
    return int(line.split()[1]) / 1024, seconds


def big_file(path: Path, jets: int) -> None:
    """The shipped test sample repeated to `jets` jets, in baskets of 1,000 jets."""
    import awkward as ak
    import uproot

    from jettag.paths import sample_path

    with uproot.open(sample_path("top_qcd_test.root")) as f:
        tree = f["tree"]
        sample = tree.arrays(library="ak", how=dict)
    n = len(next(iter(sample.values())))
    tmp = path.with_suffix(".tmp")
    with uproot.recreate(tmp) as out:
        tree = None
        written = 0
        while written < jets:
            for start in range(0, n, 1000):
                stop = min(start + 1000, n, start + jets - written)
                if stop <= start:
                    break
                part = {k: v[start:stop] for k, v in sample.items()}
                if tree is None:
                    types = {
                        k: v.type.content if isinstance(v, ak.Array) else v.dtype for k, v in part.items()
                    }
                    tree = out.mktree("tree", types)
                tree.extend(part)
                written += stop - start
    tmp.rename(path)


def probe(kind: str, model: str, batch_size: int) -> None:
    """Child process: a reference-size ParT of `model` (jettag or weaver) training or scoring."""
    import contextlib

    import torch

    sys.path.insert(0, str(HERE))
    import bench_models as bm

    torch.set_num_threads(2)
    args = bm.parse_args(["--jets", "1024", "--batch-size", str(batch_size)])
    dm, num_features = bm.load_jets(args)
    grouped, in_file_order, train = bm.make_batches(dm, batch_size)
    jettag, weaver = bm.build_models(num_features, dm.num_classes, None, torch.device("cpu"), "auto")
    net, run = (jettag, bm.run_jettag) if model == "jettag" else (weaver, bm.run_weaver)
    del jettag, weaver
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4) if kind == "train" else None
    net.train(kind == "train")
    batches = train[:8] if kind == "train" else (grouped if model == "jettag" else in_file_order)
    with torch.no_grad() if optimizer is None else contextlib.nullcontext():
        for batch in batches:
            run(net, batch, torch.device("cpu"), optimizer)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jets", type=int, default=1_000_000, help="jets in the file scored (default 1M)")
    parser.add_argument(
        "--dir", default=None, help="where the run and the file go (default: a temporary one)"
    )
    parser.add_argument(
        "--train-args", nargs="*", default=[], help="overrides for jettag-train (default none)"
    )
    parser.add_argument("--batch-size", type=int, default=128, help="reference-size ParT batch (default 128)")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        kind, model = args.probe.split(":")
        return probe(kind, model, args.batch_size)

    work = Path(args.dir or tempfile.mkdtemp(prefix="bench_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    rows: list[tuple[str, float, float | None, str]] = []

    def show(name: str, ours: float, theirs: float | None, note: str = "") -> None:
        rows.append((name, ours, theirs, note))
        ref = f"{theirs:8.0f}" if theirs is not None else "       -"
        ratio = f"{ours / theirs:6.2f}" if theirs else "     -"
        print(f"{name:<52} {ours:8.0f} {ref} {ratio}  {note}", flush=True)

    print(f"{'peak resident memory (MiB)':<52} {'jettag':>8} {'weaver':>8} {'ratio':>6}", flush=True)
    run_dir = work / "train"
    peak, seconds = peak_of([str(bin_dir / "jettag-train"), f"hydra.run.dir={run_dir}", *args.train_args])
    info = json.loads((run_dir / "metrics.json").read_text())["info"]
    per_epoch = info.get("resident_mb_per_epoch") or []
    growth = per_epoch[-1] - per_epoch[1] if len(per_epoch) > 2 else float("nan")
    show("jettag-train, no arguments", peak, None,
         f"{seconds:.0f} s; after epoch 2 -> last: {growth:+.0f} MB ({len(per_epoch)} epochs)")  # fmt: skip

    data = work / f"jets_{args.jets}.root"
    if not data.exists():
        print(f"writing {data} ({args.jets} jets) ...", file=sys.stderr, flush=True)
        big_file(data, args.jets)
    peak, seconds = peak_of(
        [str(bin_dir / "jettag-predict"), f"run_dir={run_dir}", f"files=[{data}]",
         f"output={work / 'scores.root'}", "progress=false"]
    )  # fmt: skip
    show(f"jettag-predict, {args.jets:,} jets", peak, None, f"{seconds:.0f} s")
    code = (
        "import sys, jettag\n"
        "scores = jettag.load(sys.argv[1]).predict(sys.argv[2])\n"
        "assert len(scores) == int(sys.argv[3]), len(scores)\n"
    )
    peak, seconds = peak_of([sys.executable, "-c", code, str(run_dir), str(data), str(args.jets)])
    show(f"tagger.predict (Python), {args.jets:,} jets", peak, None, f"{seconds:.0f} s")

    for kind, what in (("train", f"training, batch {args.batch_size}, 8 steps"), ("infer", "scoring")):
        ours, _ = peak_of(
            [sys.executable, __file__, "--probe", f"{kind}:jettag", "--batch-size", str(args.batch_size)]
        )
        try:
            theirs, _ = peak_of(
                [sys.executable, __file__, "--probe", f"{kind}:weaver", "--batch-size", str(args.batch_size)]
            )
        except SystemExit as error:  # weaver-core missing: jettag's figure alone
            print(f"  (weaver-core row skipped: {str(error).splitlines()[-1]})", file=sys.stderr)
            theirs = None
        show(f"reference-size ParT, {what}", ours, theirs)
    (work / "bench_memory.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(f"results in {work / 'bench_memory.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
