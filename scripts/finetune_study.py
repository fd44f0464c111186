"""Does pretraining pay off? Fine-tuned against tuned from-scratch training, at 1k, 5k and 20k labels.

    python scripts/make_study_data.py --out data/study         # the sets, once (cached)
    python scripts/finetune_study.py --data data/study --out studies/pretraining

The small ParT (kinpid inputs, 32 particles) on generated top vs QCD jets, trained on the first B
jets of a seed-dependent permutation of the labelled pool, for B in `--budgets` (1k, 5k, 20k) with
`--seeds` seeds each (5, 3, 2: the seed also sets the initialisation and the batches), by

- `scratch`: random initialisation (experiment=study_scratch), its lr chosen on validation among
  `--scratch-lrs` (at each budget, with seed 0; the best validation AUC wins);
- `supervised`, `mpm`, `contrastive`, `cls_mpm`: fine-tuned (experiment=study_finetune) from the
  backbone pretrained on the 100k-jet pretraining set by experiment=pretrain_supervised,
  pretrain_mpm, pretrain_contrastive, pretrain_cls_mpm (run once each, reused);
- `probe_<backbone>`: a linear probe (the backbone frozen, only the new head trains) on each
  pretrained backbone and on a random one (`probe_random`), with `--probe-seeds` seeds per budget.

Every run has the same number of optimizer steps at a budget (`--steps`), validates every 1/20 of
them and keeps the checkpoint of the best validation AUC, with the same early stopping (6 validations
without improvement), and is tested on the whole test set (>= 20k jets): AUC, Rej50 and Rej30.

Resumable cell by cell: each (method, budget, seed) is one `jettag-train` run whose result is
appended as a line to `<out>/results.csv` as soon as it finishes; a rerun skips the cells already
there, so the study can span several sittings, on other machines too. Each pretrained backbone is
kept as `<out>/backbones/<name>.ckpt` (the model's tensors and the run's record, without optimizer
state; commit them with the results): a rerun fine-tunes from it instead of pretraining again, so
the pretraining set is needed only until the four backbones exist. The sets are remade identically
from their seeds; `<out>/data.json` holds the content hash of every file the results were made with
(from make_study_data's manifests), and a rerun on files with other jets stops and says which.
`<out>/table.md`, `table.csv` and `rej50_vs_budget.png` are rebuilt after every cell (mean +- std over
seeds); `--report-only` rebuilds them alone. Run directories go to `--runs` (default <data>/runs).
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

PRETRAINING = {  # backbone -> the experiment that pretrains it
    "supervised": "pretrain_supervised",
    "mpm": "pretrain_mpm",
    "contrastive": "pretrain_contrastive",
    "cls_mpm": "pretrain_cls_mpm",
}
METHODS = {
    "scratch": "from scratch (lr tuned on validation)",
    "supervised": "fine-tuned: supervised pretraining",
    "mpm": "fine-tuned: masked particle modelling (MPMv2)",
    "contrastive": "fine-tuned: contrastive (JetCLR-style)",
    "cls_mpm": "fine-tuned: classification + MPM",
    **{f"probe_{b}": f"linear probe: {b} backbone" for b in ("random", *PRETRAINING)},
}
FIELDS = ["method", "budget", "seed", "lr", "steps", "optimizer_steps", "val_auc", "auc", "rej50", "rej30",
          "seconds"]  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    parser.add_argument("--data", default="data/study", help="directory of scripts/make_study_data.py")
    parser.add_argument("--out", default="studies/pretraining", help="results, table and plot")
    parser.add_argument("--runs", default=None, help="run directories (default: <data>/runs)")
    parser.add_argument("--budgets", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[5, 3, 2], help="seeds per budget")
    parser.add_argument(
        "--steps", type=int, nargs="+", default=[400, 800, 1600], help="optimizer steps per budget"
    )
    parser.add_argument(
        "--probe-seeds", type=int, nargs="+", default=[2, 1, 1], help="probe seeds per budget"
    )
    parser.add_argument("--scratch-lrs", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3, 3e-3])
    parser.add_argument("--finetune-lr", type=float, default=2e-4, help="backbone lr (head x5)")
    parser.add_argument("--probe-lr", type=float, default=1e-3, help="the probe's head lr")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (each then uses one thread)")
    parser.add_argument("--pretrain-time", default=None,
                        help="trainer.max_time of each pretraining run, DD:HH:MM:SS (default: the experiment's)")  # fmt: skip
    parser.add_argument("--report-only", action="store_true", help="only rebuild the table and plot")
    parser.add_argument("--readme", default=None,
                        help="also put the table between the <!-- study-table --> markers of this file")  # fmt: skip
    args = parser.parse_args(argv)
    if not len(args.budgets) == len(args.seeds) == len(args.steps) == len(args.probe_seeds):
        parser.error("--budgets, --seeds, --steps and --probe-seeds need one value each per budget")
    if len(args.scratch_lrs) < 3:
        parser.error("--scratch-lrs: give at least three learning rates to choose from")
    return args


class Study:
    def __init__(self, args):
        self.args = args
        self.data = Path(args.data).resolve()
        self.out = Path(args.out)
        self.runs = Path(args.runs).resolve() if args.runs else self.data / "runs"
        self.results = self.out / "results.csv"
        self.lock = threading.Lock()
        self.subset_lock = threading.Lock()

    # --- one jettag-train run -------------------------------------------------------------------
    def train(self, overrides: list[str], run_dir: Path) -> float:
        start = time.perf_counter()
        command = ["jettag-train", *overrides, f"hydra.run.dir={run_dir}"]
        env = dict(os.environ)
        if self.args.jobs > 1:  # several runs at once: one thread each
            env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        run_dir.mkdir(parents=True, exist_ok=True)
        log_path = run_dir / "train.log"
        with open(log_path, "w") as log:
            log.write(" ".join(command) + "\n")
            log.flush()
            result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        if result.returncode != 0:
            raise RuntimeError(f"finetune_study: '{' '.join(command)}' failed; see {log_path}")
        return time.perf_counter() - start

    def parallel(self, jobs: list) -> list:
        if self.args.jobs == 1:
            return [job() for job in jobs]
        with ThreadPoolExecutor(max_workers=self.args.jobs) as pool:
            return list(pool.map(lambda job: job(), jobs))

    # --- pretraining ------------------------------------------------------------------------------
    def backbone(self, name: str) -> Path:
        """The kept backbone of a pretraining method (`keep_backbone`), what the cells fine-tune."""
        return (self.out / "backbones" / f"{name}.ckpt").resolve()

    def pretrain(self, needed: set[str]) -> None:
        # quoted: the brackets of the glob are Hydra list syntax otherwise
        files = [f"data.train_files=['{self.data}/pretrain/multi_[0-9]*.root']",
                 f"data.val_files=[{self.data}/pretrain/multi_val.root]"]  # fmt: skip
        extra = [f"trainer.max_time={self.args.pretrain_time}"] if self.args.pretrain_time else []
        jobs = []
        for name in sorted(needed):
            if self.backbone(name).is_file():
                continue
            self.check_data(["pretrain/multi_[0-9]*.root", "pretrain/multi_val.root"])
            run_dir = self.runs / "pretrain" / name
            best = run_dir / "checkpoints" / "best.ckpt"

            def job(name=name, run_dir=run_dir, best=best):
                seconds = 0.0
                if not best.is_file():  # a run that ended before its backbone was kept is not redone
                    print(f"pretraining {name} ({PRETRAINING[name]})", flush=True)
                    seconds = self.train([f"experiment={PRETRAINING[name]}", *files, *extra], run_dir)
                # best.ckpt: the lowest validation loss; last.ckpt if the run stopped before validating
                source = best if best.is_file() else best.with_name("last.ckpt")
                score = keep_backbone(source, self.backbone(name))
                with self.lock:
                    append(self.out / "pretraining.csv", {"backbone": name, "experiment": PRETRAINING[name],
                                                          "overrides": " ".join(extra), "best_val": score,
                                                          "seconds": round(seconds)})  # fmt: skip
                print(
                    f"pretraining {name} done in {seconds:.0f} s, kept as {self.backbone(name)}", flush=True
                )

            jobs.append(job)
        self.parallel(jobs)

    # --- the sets the results were made with --------------------------------------------------------
    def check_data(self, patterns: list[str]) -> None:
        """Every file matching `patterns` (under --data) must hold the jets that the results in --out
        were made with: its content hash (make_study_data's manifest) is compared with <out>/data.json,
        where files seen for the first time are added."""
        record_path = self.out / "data.json"
        with self.lock:
            known = json.loads(record_path.read_text()) if record_path.is_file() else {}
            added = False
            for pattern in patterns:
                for path in sorted(self.data.glob(pattern)):
                    relative = str(path.relative_to(self.data))
                    manifest = path.with_suffix(".json")
                    digest = (
                        json.loads(manifest.read_text()).get("content_sha256") if manifest.is_file() else None
                    )
                    if digest is None:
                        print(f"finetune_study: {path} has no content hash (no make_study_data manifest); "
                              "not checked", flush=True)  # fmt: skip
                    elif relative not in known:
                        known[relative], added = digest, True
                    elif known[relative] != digest:
                        sys.exit(
                            f"finetune_study: {path} holds other jets than the file the results in {self.out} "
                            f"were made with (content hash {digest[:12]} against {known[relative][:12]} in "
                            f"{record_path}); remake it with scripts/make_study_data.py's default arguments, or "
                            "give another --out to start a new study."
                        )
            if added:
                record_path.parent.mkdir(parents=True, exist_ok=True)
                record_path.write_text(json.dumps(dict(sorted(known.items())), indent=1) + "\n")

    # --- the labelled budgets ---------------------------------------------------------------------
    def subset(self, n: int, seed: int) -> Path:
        """The first n jets of a seed-fixed permutation of the pool, as a ROOT file (written once)."""
        path = self.data / "subsets" / f"labelled_{n}_seed{seed}.root"
        with self.subset_lock:  # runs side by side (--jobs) may ask for the same subset at once
            if not path.is_file():
                self.write_subset(path, n, seed)
        return path

    def write_subset(self, path: Path, n: int, seed: int) -> None:
        from jettag.generate.writer import write_jetclass_root

        pool = sorted((self.data / "topqcd").glob("pool_*.root"))
        arrays = ak.concatenate([uproot.open(p)["tree"].arrays(library="ak") for p in pool])
        if n > len(arrays):
            sys.exit(f"finetune_study: the labelled pool has {len(arrays)} jets, fewer than the budget {n}.")
        chosen = arrays[np.random.default_rng(seed).permutation(len(arrays))[:n]]
        columns = {name: chosen[name] for name in chosen.fields}
        columns = {k: (v if v.ndim > 1 else ak.to_numpy(v)) for k, v in columns.items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.stem + ".partial.root")
        write_jetclass_root(partial, columns, compression="zlib", aux="aux_genpart_pt" in columns)
        os.replace(partial, path)

    def common(self, budget: int, seed: int, steps: int) -> list[str]:
        d = self.data
        self.check_data(["topqcd/*.root"])
        return [
            f"data.train_files=[{self.subset(budget, seed)}]",
            f"data.val_files=[{d}/topqcd/val.root]",
            f"data.test_files=[{d}/topqcd/test_*.root]",
            f"trainer.max_steps={steps}",
            f"trainer.val_check_interval={max(steps // 20, 1)}",
            f"seed={seed}",
        ]

    def cell(self, method: str, budget: int, seed: int, steps: int, lr: float, overrides: list[str],
             name: str | None = None) -> dict:  # fmt: skip
        run_dir = self.runs / "cells" / (name or f"{method}_{budget}_seed{seed}")
        print(f"{method}: {budget} labelled jets, seed {seed}, lr {lr:g}, {steps} steps", flush=True)
        seconds = self.train([*overrides, *self.common(budget, seed, steps)], run_dir)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        info = metrics["info"]  # the run's: steps taken, the best validation AUC (its tested checkpoint)
        row = {"method": method, "budget": budget, "seed": seed, "lr": lr, "steps": steps,
               "optimizer_steps": info["optimizer_steps"], "val_auc": info["best_val_auc"],
               "auc": metrics["auc"], "rej50": metric(metrics, "rej50"), "rej30": metric(metrics, "rej30"),
               "seconds": round(seconds)}  # fmt: skip
        print(f"  AUC {row['auc']:.4f}, Rej50 {row['rej50']:.1f}, Rej30 {row['rej30']:.1f} ({seconds:.0f} s)",
              flush=True)  # fmt: skip
        return row

    def record(self, row: dict) -> None:
        with self.lock:
            append(self.results, row)
            report(self.out)

    def scratch_lr(self, budget: int, steps: int, rows: list[dict]) -> float:
        """The lr of the best validation AUC at this budget (seed 0), running the missing candidates."""
        tried = {
            float(r["lr"]): r for r in rows if r["method"] == "scratch_lr" and int(r["budget"]) == budget
        }

        def candidate(lr):
            row = self.cell("scratch_lr", budget, 0, steps, lr,
                            ["experiment=study_scratch", f"task.optimizer.lr={lr}"],
                            name=f"scratch_lr{lr:g}_{budget}")  # fmt: skip
            self.record(row)
            tried[lr] = row

        self.parallel([lambda lr=lr: candidate(lr) for lr in self.args.scratch_lrs if lr not in tried])
        best = max(self.args.scratch_lrs, key=lambda lr: float(tried[lr]["val_auc"]))
        print(
            f"scratch at {budget}: lr {best:g} (validation AUC {float(tried[best]['val_auc']):.4f})",
            flush=True,
        )
        return best

    def run(self) -> None:
        a = self.args
        probes = [m for m in a.methods if m.startswith("probe_")]
        needed = {m for m in a.methods if m in PRETRAINING} | {m[6:] for m in probes if m != "probe_random"}
        self.pretrain(needed)
        done = {(r["method"], int(r["budget"]), int(r["seed"])) for r in read(self.results)}
        for budget, n_seeds, steps, n_probe in zip(a.budgets, a.seeds, a.steps, a.probe_seeds, strict=True):
            jobs = []
            if "scratch" in a.methods:
                lr = self.scratch_lr(budget, steps, read(self.results))
                for seed in range(n_seeds):
                    if ("scratch", budget, seed) in done:
                        continue
                    if seed == 0:  # the selection run of the chosen lr is seed 0's run
                        chosen = [r for r in read(self.results) if r["method"] == "scratch_lr"
                                  and int(r["budget"]) == budget and float(r["lr"]) == lr]  # fmt: skip
                        self.record({**chosen[0], "method": "scratch"})
                        continue
                    overrides = ["experiment=study_scratch", f"task.optimizer.lr={lr}"]
                    jobs.append(self.job("scratch", budget, seed, steps, lr, overrides))
            for method in a.methods:
                if method in PRETRAINING:
                    for seed in range(n_seeds):
                        if (method, budget, seed) not in done:
                            overrides = ["experiment=study_finetune", f"task.backbone={self.backbone(method)}",
                                         f"task.optimizer.lr={a.finetune_lr}"]  # fmt: skip
                            jobs.append(self.job(method, budget, seed, steps, a.finetune_lr, overrides))
                if method.startswith("probe_"):
                    source = method[6:]
                    backbone = "random" if source == "random" else self.backbone(source)
                    for seed in range(n_probe):
                        if (method, budget, seed) not in done:
                            overrides = ["experiment=study_finetune", f"task.backbone={backbone}",
                                         "task.freeze_backbone=true", f"task.optimizer.lr={a.probe_lr}",
                                         "task.head_lr_factor=1.0", "task.schedule.freeze_steps=0",
                                         "task.schedule.ramp_steps=0"]  # fmt: skip
                            jobs.append(self.job(method, budget, seed, steps, a.probe_lr, overrides))
            self.parallel(jobs)

    def job(self, method, budget, seed, steps, lr, overrides):
        return lambda: self.record(self.cell(method, budget, seed, steps, lr, overrides))


def keep_backbone(checkpoint: Path, kept: Path) -> float | None:
    """Write the model tensors and the run record of a pretraining checkpoint to `kept` (no optimizer
    state, no decoder or projection head: what fine-tuning loads); returns the best value of the run's monitored metric
    (val/loss; val/auc for supervised pretraining)."""
    import torch

    content = torch.load(checkpoint, map_location="cpu", weights_only=False)
    slim = {key: value for key, value in content.items() if key not in ("optimizer_states", "lr_schedulers",
                                                                         "loops", "callbacks", "state_dict")}  # fmt: skip
    slim["state_dict"] = {k: v for k, v in content["state_dict"].items() if k.startswith("model.")}
    kept.parent.mkdir(parents=True, exist_ok=True)
    partial = kept.with_name(kept.name + ".partial")
    torch.save(slim, partial)
    os.replace(partial, kept)
    scores = [state.get("best_model_score") for key, state in content.get("callbacks", {}).items()
              if str(key).startswith("ModelCheckpoint")]  # fmt: skip
    score = next((float(s) for s in scores if s is not None), None)
    return score


def metric(metrics: dict, key: str) -> float:
    value = metrics.get(key)
    if value is None:  # infinite rejections are stored as null (see metrics.json "nonfinite_values")
        return float(metrics.get("nonfinite_values", {}).get(key, math.inf))
    return float(value)


def read(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def append(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.is_file()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def mean_std(values: list[float]) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and std over seeds of AUC, Rej50 and Rej30 per method and budget."""
    table = []
    for budget in sorted({int(r["budget"]) for r in rows}):
        for method in METHODS:
            sel = [r for r in rows if r["method"] == method and int(r["budget"]) == budget]
            if not sel:
                continue
            entry = {"budget": budget, "method": method, "seeds": len(sel), "lr": float(sel[0]["lr"]),
                     "steps": int(sel[0]["steps"])}  # fmt: skip
            for key in ("auc", "rej50", "rej30"):
                entry[f"{key}_mean"], entry[f"{key}_std"] = mean_std([float(r[key]) for r in sel])
            entry["seconds_mean"] = float(np.mean([float(r["seconds"]) for r in sel]))
            table.append(entry)
    return table


def report(out: Path) -> list[dict]:
    rows = read(out / "results.csv")
    table = summarize(rows)
    if not rows:
        return table
    with open(out / "table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]) if table else ["budget", "method"])
        writer.writeheader()
        for row in table:
            writer.writerow({k: (f"{v:.5g}" if isinstance(v, float) else v) for k, v in row.items()})
    scratch = {r["budget"]: r for r in table if r["method"] == "scratch"}
    lines = ["| labelled jets | training | seeds | AUC | Rej50 | Rej30 | Rej50 / scratch |",
             "|---:|---|---:|---|---|---|---:|"]  # fmt: skip
    for r in table:
        base = scratch.get(r["budget"])
        gain = (
            "" if base is None or r["method"] == "scratch" else f"{r['rej50_mean'] / base['rej50_mean']:.2f}"
        )
        lines.append(
            f"| {r['budget']:,} | {METHODS[r['method']]} | {r['seeds']} | {r['auc_mean']:.4f} +- {r['auc_std']:.4f} "
            f"| {r['rej50_mean']:.1f} +- {r['rej50_std']:.1f} | {r['rej30_mean']:.1f} +- {r['rej30_std']:.1f} | {gain} |"
        )
    # seed 0 from scratch is the lr scan's run of the chosen lr: counted once
    runs = [r for r in rows if not (r["method"] == "scratch" and int(r["seed"]) == 0)]
    total = sum(float(r["seconds"]) for r in runs) + sum(
        float(r["seconds"]) for r in read(out / "pretraining.csv")
    )
    scans = sorted({int(r["budget"]) for r in rows if r["method"] == "scratch_lr"})
    if scans:
        lines += ["", "From-scratch learning rate, chosen on the validation AUC (seed 0):"]
    for budget in scans:
        tried = sorted((float(r["lr"]), float(r["val_auc"])) for r in rows
                       if r["method"] == "scratch_lr" and int(r["budget"]) == budget)  # fmt: skip
        best = max(tried, key=lambda t: t[1])[0]
        scan = ", ".join(f"lr {lr:g}: {auc:.4f}" for lr, auc in tried)
        lines.append(
            f"- {budget:,} jets: {scan}" + (f"; chosen {best:g}" if len(tried) >= 3 else " (scan running)")
        )
    lines.append("")
    lines.append(f"{len(runs)} runs and {len(read(out / 'pretraining.csv'))} pretraining runs so far, "
                 f"{total / 3600:.1f} h of wall time in all (2 cores).")  # fmt: skip
    (out / "table.md").write_text("\n".join(lines) + "\n")
    plot(table, out)
    return table


def plot(table: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for ax, probes in zip(axes, (False, True), strict=True):
        for method, label in METHODS.items():
            if method.startswith("probe_") != probes and method != "scratch":
                continue
            rows = [r for r in table if r["method"] == method]
            if rows:
                ax.errorbar([r["budget"] for r in rows], [r["rej50_mean"] for r in rows],
                            yerr=[r["rej50_std"] for r in rows], marker="o", capsize=3, label=label)  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("labelled top/QCD training jets")
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.set_title("linear probes (frozen backbone)" if probes else "fine-tuned and from scratch")
    axes[0].set_ylabel("background rejection at 50% signal efficiency")
    fig.tight_layout()
    fig.savefig(out / "rej50_vs_budget.png", dpi=120)
    plt.close(fig)


def put_in_readme(readme: Path, table: str) -> None:
    """The table between the `<!-- study-table -->` and `<!-- /study-table -->` lines of `readme`."""
    text = readme.read_text()
    start, end = "<!-- study-table -->\n", "<!-- /study-table -->"
    if start not in text or end not in text:
        sys.exit(f"finetune_study: {readme} has no '<!-- study-table -->' ... '<!-- /study-table -->' lines.")
    head, rest = text.split(start, 1)
    readme.write_text(head + start + table + rest[rest.index(end) :])


def main(argv=None) -> None:
    args = parse_args(argv)
    study = Study(args)
    study.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if not args.report_only:
        study.run()
    table = report(study.out)
    if table:
        if args.readme:
            put_in_readme(Path(args.readme), (study.out / "table.md").read_text())
        print((study.out / "table.md").read_text())
        print(
            f"wrote {study.out / 'table.md'}, {study.out / 'table.csv'}, {study.out / 'rej50_vs_budget.png'}"
        )


if __name__ == "__main__":
    main()
