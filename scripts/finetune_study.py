"""How much does pretraining help? From scratch against fine-tuned, at several labelled budgets.

    python scripts/finetune_study.py --labelled topqcd_train.root --val topqcd_val.root \\
        --test topqcd_test.root --pretrain multi_train.root --pretrain-val multi_val.root --out study

Three ways to train the small ParT (part_small, kinpid inputs) on top vs QCD:

- `scratch`: task=classification from random weights (lr 1e-3, flat then decaying);
- `supervised`: task=finetune from a ParT pretrained with labels on the multi-class set
  (experiment=pretrain_supervised), the published fine-tuning recipe (lr 1e-4, head x50, no scheduler);
- `ssl`: the same fine-tuning from a ParT pretrained without labels by masked particle modelling
  (experiment=pretrain_mpm) on the same multi-class set;
- `ssl_cls`: as `ssl`, with the class token and class-attention blocks, which masked particle modelling
  does not train, at the head's learning rate (task.head_lr_modules).

Each is trained on the first B jets of a seed-dependent permutation of the labelled pool, for B in
`--budgets` with `--seeds` seeds each (the seed also sets the initialisation and the batches), and
tested on `--test`. Every run is one `jettag-train` command (its run directory under `--out/runs`);
finished runs are skipped when the study is started again, so it can be resumed. The study writes
`results.csv` (one row per run), `table.md` and `table.csv` (AUC and Rej50, mean +- std over seeds),
and `rej50_vs_budget.png` / `.pdf`.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

METHODS = {
    "scratch": "from scratch",
    "supervised": "fine-tuned (supervised pretraining)",
    "ssl": "fine-tuned (self-supervised MPM pretraining)",
    "ssl_cls": "fine-tuned (MPM pretraining, class attention at the head's lr)",
}
# the pretrained backbone each fine-tuning method starts from, and its extra settings
BACKBONE = {"supervised": "supervised", "ssl": "ssl", "ssl_cls": "ssl"}
EXTRA = {"ssl_cls": ["task.head_lr_modules=[head,cls_blocks,cls_token,norm]"]}
LABELS = "[label_QCD,label_Tbqq]"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    parser.add_argument("--labelled", required=True, help="top/QCD pool the budgets are drawn from (ROOT)")
    parser.add_argument("--val", required=True, help="top/QCD validation file(s), comma-separated")
    parser.add_argument("--test", required=True, help="top/QCD test file(s), comma-separated")
    parser.add_argument("--pretrain", required=True, help="multi-class training file(s) for pretraining")
    parser.add_argument("--pretrain-val", required=True, help="multi-class validation file(s)")
    parser.add_argument("--out", default="study", help="study directory")
    parser.add_argument("--budgets", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 3, 1], help="seeds per budget")
    parser.add_argument("--epochs", type=int, nargs="+", default=[6, 2, 2], help="epochs per budget")
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--max-particles", type=int, default=32, help="features.max_particles")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (each then uses one thread)")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the table and plot")
    args = parser.parse_args(argv)
    if not len(args.budgets) == len(args.seeds) == len(args.epochs):
        parser.error("--budgets, --seeds and --epochs need one value each per budget")
    return args


def files(text: str) -> str:
    return "[" + ",".join(str(Path(p).resolve()) for p in text.split(",")) + "]"


def common(args) -> list[str]:
    return [f"features.max_particles={args.max_particles}", f"data.batch_size={args.batch_size}"]


def run_train(overrides: list[str], run_dir: Path, log_path: Path, threads: int | None) -> float:
    start = time.perf_counter()
    command = ["jettag-train", *overrides, f"hydra.run.dir={run_dir}"]
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        log.write(" ".join(command) + "\n")
        log.flush()
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"finetune_study: '{' '.join(command)}' failed; see {log_path}")
    return time.perf_counter() - start


def parallel(jobs: list, args) -> list:
    """Run the (callable, ...) jobs, `args.jobs` at a time; their results in order."""
    if args.jobs == 1:
        return [job() for job in jobs]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        return list(pool.map(lambda job: job(), jobs))


def threads(args) -> int | None:
    # several runs at once: one thread each (2 cores, 2 runs) beats two runs fighting for threads
    return 1 if args.jobs > 1 else None


def pretrain(args, out: Path) -> dict[str, Path]:
    """The supervised and self-supervised pretrained backbones (trained once, reused)."""
    data = [f"data.train_files={files(args.pretrain)}", f"data.val_files={files(args.pretrain_val)}"]
    backbones, jobs = {}, []
    needed = {BACKBONE[m] for m in args.methods if m in BACKBONE}
    for method, experiment in (("supervised", "pretrain_supervised"), ("ssl", "pretrain_mpm")):
        if method not in needed:
            continue
        run_dir = out / "pretrain" / method
        checkpoint = run_dir / "checkpoints" / "best.ckpt"
        backbones[method] = checkpoint
        if checkpoint.is_file():
            continue
        overrides = [
            f"experiment={experiment}",
            *data,
            *common(args),
            f"trainer.max_epochs={args.pretrain_epochs}",
        ]

        def job(overrides=overrides, run_dir=run_dir, method=method, experiment=experiment):
            print(f"pretraining {method} ({experiment})", flush=True)
            seconds = run_train(overrides, run_dir, out / f"pretrain_{method}.log", threads(args))
            (run_dir / "seconds.txt").write_text(f"{seconds:.0f}\n")
            print(f"pretraining {method} done in {seconds:.0f} s", flush=True)

        jobs.append(job)
    parallel(jobs, args)
    return backbones


def subset(pool: Path, n: int, seed: int, out: Path) -> Path:
    """The first n jets of a seed-fixed permutation of the pool, as a ROOT file (written once)."""
    path = out / "subsets" / f"labelled_{n}_seed{seed}.root"
    if path.is_file():
        return path
    from jettag.generate.writer import write_jetclass_root

    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = uproot.open(pool)["tree"].arrays(library="ak")
    if n > len(arrays):
        sys.exit(
            f"finetune_study: the labelled pool {pool} has {len(arrays)} jets, fewer than the budget {n}."
        )
    order = np.random.default_rng(seed).permutation(len(arrays))[:n]
    chosen = arrays[order]
    columns = {name: chosen[name] for name in chosen.fields}
    columns = {k: (v if v.ndim > 1 else ak.to_numpy(v)) for k, v in columns.items()}
    write_jetclass_root(path, columns, compression="zlib", aux="aux_genpart_pt" in columns)
    return path


def run_all(args, out: Path) -> None:
    backbones = pretrain(args, out)
    results = out / "results.csv"
    done = {(r["method"], int(r["budget"]), int(r["seed"])) for r in read_results(results)}
    data = [
        f"data.val_files={files(args.val)}",
        f"data.test_files={files(args.test)}",
        f"data.labels={LABELS}",
    ]
    lock = threading.Lock()
    jobs = []
    # cheapest first: the small budgets of every method before the large ones
    for budget, n_seeds, epochs in zip(args.budgets, args.seeds, args.epochs, strict=True):
        for seed in range(n_seeds):
            train = subset(Path(args.labelled), budget, seed, out)
            for method in args.methods:
                if (method, budget, seed) in done:
                    continue
                if method == "scratch":
                    task = ["experiment=sample_part_small"]
                else:
                    backbone = backbones[BACKBONE[method]].resolve()
                    task = ["experiment=finetune_part", f"task.backbone={backbone}", *EXTRA.get(method, [])]
                run_dir = (out / "runs" / f"{method}_{budget}_seed{seed}").resolve()
                overrides = [*task, f"data.train_files=[{train.resolve()}]", *data, *common(args),
                             f"trainer.max_epochs={epochs}", f"seed={seed}"]  # fmt: skip

                def job(overrides=overrides, run_dir=run_dir, method=method, budget=budget, seed=seed,
                        epochs=epochs):  # fmt: skip
                    print(f"{method}: {budget} labelled jets, seed {seed}, {epochs} epochs", flush=True)
                    seconds = run_train(
                        overrides, run_dir, run_dir.parent / f"{run_dir.name}.log", threads(args)
                    )
                    metrics = json.loads((run_dir / "metrics.json").read_text())
                    row = {"method": method, "budget": budget, "seed": seed, "epochs": epochs,
                           "auc": metrics["auc"], "rej50": rej50(metrics), "seconds": round(seconds)}  # fmt: skip
                    with lock:
                        append_result(results, row)
                        report(out)
                    print(f"{method} {budget} seed {seed}: AUC {row['auc']:.4f}, Rej50 {row['rej50']:.1f} "
                          f"({seconds:.0f} s)", flush=True)  # fmt: skip

                jobs.append(job)
    parallel(jobs, args)


def rej50(metrics: dict) -> float:
    value = metrics.get("rej50")
    if value is None:  # infinite rejections are stored as null (see metrics.json "nonfinite_values")
        return float(metrics.get("nonfinite_values", {}).get("rej50", math.inf))
    return float(value)


def read_results(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def append_result(path: Path, row: dict) -> None:
    new = not path.is_file()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def summarize(rows: list[dict]) -> list[dict]:
    """mean and std (over seeds; 0 for one seed) of AUC and Rej50 per method and budget."""
    table = []
    budgets = sorted({int(r["budget"]) for r in rows})
    for budget in budgets:
        for method in METHODS:
            sel = [r for r in rows if r["method"] == method and int(r["budget"]) == budget]
            if not sel:
                continue
            auc = np.array([float(r["auc"]) for r in sel])
            rej = np.array([float(r["rej50"]) for r in sel])
            table.append({
                "budget": budget, "method": method, "seeds": len(sel), "epochs": int(sel[0]["epochs"]),
                "auc_mean": auc.mean(), "auc_std": auc.std(ddof=1) if len(sel) > 1 else 0.0,
                "rej50_mean": rej.mean(), "rej50_std": rej.std(ddof=1) if len(sel) > 1 else 0.0,
                "seconds_mean": np.mean([float(r["seconds"]) for r in sel]),
            })  # fmt: skip
    return table


def report(out: Path) -> list[dict]:
    table = summarize(read_results(out / "results.csv"))
    if not table:
        return table
    with open(out / "table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        for row in table:
            writer.writerow({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in row.items()})
    lines = ["| labelled jets | training | seeds | epochs | AUC | Rej50 | gain in Rej50 vs scratch |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    scratch = {r["budget"]: r for r in table if r["method"] == "scratch"}
    for r in table:
        base = scratch.get(r["budget"])
        gain = (
            "" if base is None or r["method"] == "scratch" else f"x{r['rej50_mean'] / base['rej50_mean']:.2f}"
        )
        lines.append(
            f"| {r['budget']:,} | {METHODS[r['method']]} | {r['seeds']} | {r['epochs']} | "
            f"{r['auc_mean']:.4f} +- {r['auc_std']:.4f} | {r['rej50_mean']:.1f} +- {r['rej50_std']:.1f} | {gain} |"
        )
    (out / "table.md").write_text("\n".join(lines) + "\n")
    plot(table, out)
    return table


def plot(table: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for method, label in METHODS.items():
        rows = [r for r in table if r["method"] == method]
        if rows:
            ax.errorbar([r["budget"] for r in rows], [r["rej50_mean"] for r in rows],
                        yerr=[r["rej50_std"] for r in rows], marker="o", capsize=3, label=label)  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("labelled top/QCD training jets")
    ax.set_ylabel("background rejection at 50% signal efficiency")
    ax.set_title("small ParT on generated top vs QCD jets")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    for suffix in ("png", "pdf"):
        fig.savefig(out / f"rej50_vs_budget.{suffix}")
    plt.close(fig)


def main(argv=None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if not args.report_only:
        run_all(args, out)
    table = report(out)
    if table:
        print((out / "table.md").read_text())
        print(f"wrote {out / 'table.md'}, {out / 'table.csv'}, {out / 'rej50_vs_budget.png'}")


if __name__ == "__main__":
    main()
