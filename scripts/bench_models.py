"""jettag's ParT against weaver-core's ParticleTransformer: speed, memory and agreement, in one run.

    jettag-generate -n 300 -o /tmp/bench.root
    python scripts/bench_models.py --files /tmp/bench.root [--features kinpid] [--reps 5] [--device cpu]
                                   [--path auto|cpu_kernels|generic]

Both models have the reference size (embed 128/512/128, pair 64/64/64, 8 heads, 8 + 2 blocks) and
identical weights: weaver's model (batch-norm statistics taken from the jets) is loaded into
jettag's with `load_weaver_weights`. jettag's model runs on its execution path `--path` (`model.path`;
auto: cpu_kernels on a CPU, generic on a GPU). Each is fed the way its own framework feeds it:

- jettag as its DataModule does: batches padded only to their longest jet, evaluation batches
  grouped by multiplicity, training batches drawn at random (data.group_by_length=false);
- weaver-core as weaver does: every jet padded to 128 particles, channels-first; its model trims
  the padding itself (to the longest jet at inference, to a random 90-100% quantile in training).

Two further rows feed jettag the very tensors weaver's model gets (file-order batches padded to
128, transposed to channels-last): the comparison an outside timing of both models on identical
inputs makes. jettag trims and buckets inside the model, so it gains there too.

Training steps see the same jets for both (forward, cross-entropy, backward, AdamW step). Timings
alternate between the models repetition by repetition (this machine is shared and noisy); the
table gives medians, and the ratio is the median of the per-repetition ratios. Peak memory is
torch.cuda.max_memory_allocated on a GPU; on a CPU the growth of the peak resident set (VmHWM) of a
fresh subprocess over the same batches (so each figure stands alone). Needs weaver-core, a
test dependency (`pip install -e ".[test]"`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from jettag.data import JetBatch
from jettag.data.datamodule import JetDataModule
from jettag.features.sets import FeatureSet
from jettag.models import ParticleTransformer, load_weaver_weights
from jettag.models.part import ExecutionPath
from jettag.models.weaver import REFERENCE_WEAVER_KWARGS
from jettag.paths import config_dir, sample_path

MAX_PARTICLES = 128
# the published ParT configuration, with weaver's own trimming of the padding
WEAVER_REFERENCE = dict(REFERENCE_WEAVER_KWARGS, trim=True, for_inference=False)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", nargs="+", default=[str(sample_path("top_qcd_test.root"))],
                        help="JetClass-schema ROOT files (default: the shipped sample's test split)")  # fmt: skip
    parser.add_argument(
        "--features", default="kinpid", help="feature set in configs/features (default: kinpid)"
    )
    parser.add_argument("--jets", type=int, default=640, help="jets used (default: 640)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions per model (default: 5)")
    parser.add_argument(
        "--train-steps", type=int, default=4, help="training steps per repetition (default: 4)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--path", default="auto", choices=[p.value for p in ExecutionPath],
                        help="jettag's execution path, model.path (default: auto)")  # fmt: skip
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-bf16", action="store_true", help="leave out the bf16 autocast row")
    parser.add_argument("--no-memory", action="store_true", help="leave out the peak-memory rows")
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)  # internal: one memory measurement
    return parser.parse_args(argv)


def load_jets(args) -> tuple[JetDataModule, int]:
    features = FeatureSet.from_config(
        yaml.safe_load((config_dir() / "features" / f"{args.features}.yaml").read_text())
    )
    if features.max_particles != MAX_PARTICLES:
        features = FeatureSet.from_config({**features.to_config(), "max_particles": MAX_PARTICLES})
    dm = JetDataModule(features, train_files=args.files, test_files=args.files, batch_size=args.batch_size,
                       group_by_length=False, progress=False)  # fmt: skip
    dataset = dm.dataset("train")
    keep = min(args.jets, len(dataset))
    for split in ("train", "test"):
        ds = dm.dataset(split)
        ds.counts = ds.counts[:keep]  # the first `keep` jets: the batch samplers draw from `counts`
    return dm, features.num_features


def make_batches(dm: JetDataModule, batch_size: int) -> tuple[list[dict], list[dict], list[dict]]:
    """Inference batches as jettag's DataModule makes them (grouped by multiplicity), the same jets in
    file order as weaver reads them, and jettag's (random) training batches."""
    dataset = dm.dataset("test")
    n = len(dataset.counts)
    in_file_order = [dataset[list(range(s, min(s + batch_size, n)))] for s in range(0, n, batch_size)]
    return list(dm.test_dataloader()), in_file_order, list(dm.train_dataloader())


def padded_for_weaver(batch: JetBatch, device) -> tuple[torch.Tensor, ...]:
    """A jettag batch padded to 128 particles, channels-first, as weaver's data loader delivers it."""
    extra = MAX_PARTICLES - batch.x.shape[1]
    x = F.pad(batch.x, (0, 0, 0, extra)).transpose(1, 2).contiguous()
    v = F.pad(batch.v, (0, 0, 0, extra)).transpose(1, 2).contiguous()
    mask = F.pad(batch.mask, (0, extra))[:, None].float()
    return x.to(device), v.to(device), mask.to(device)


def build_models(num_features: int, num_classes: int, calibration: dict | None, device, path: str = "auto"):
    """weaver-core's ParT and jettag's with the same weights; batch-norm statistics from `calibration`."""
    try:
        from weaver.nn.model.ParticleTransformer import ParticleTransformer as WeaverParT
    except ImportError:
        sys.exit(
            "bench_models.py needs weaver-core, a test dependency of jettag: pip install weaver-core==0.5.3"
        )

    torch.manual_seed(0)
    weaver = WeaverParT(input_dim=num_features, num_classes=num_classes, **WEAVER_REFERENCE)
    if calibration is not None:  # batch-norm statistics of real jets (a fresh model has mean 0, variance 1)
        for module in weaver.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.momentum = None
        weaver.train()
        with torch.no_grad():
            weaver(*padded_for_weaver(calibration, "cpu"))
        for module in weaver.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.momentum = 0.1
    jettag = ParticleTransformer(num_features, num_classes, path=path)
    load_weaver_weights(jettag, weaver.state_dict())
    return jettag.to(device), weaver.to(device)


def run_jettag(model, batch, device, optimizer=None, autocast=False):
    x, v, mask, y = (t.to(device) for t in (batch.x, batch.v, batch.mask, batch.y))
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        if optimizer is None:
            return model(x, v, mask)
        loss = F.cross_entropy(model(x, v, mask), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def as_weaver_fed(batch: JetBatch) -> JetBatch:
    """The batch with exactly the tensors weaver's model gets (padded to 128), channels-last for jettag."""
    x, v, mask = padded_for_weaver(batch, "cpu")
    return dataclasses.replace(batch, x=x.transpose(1, 2), v=v.transpose(1, 2), mask=mask[:, 0].bool())


def run_weaver(model, batch, device, optimizer=None):
    x, v, mask = padded_for_weaver(batch, device)
    if optimizer is None:
        return model(x, v, mask)
    loss = F.cross_entropy(model(x, v, mask), batch.y.to(device))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, batches, device) -> float:
    """jets per second of `fn` over `batches`."""
    sync(device)
    start = time.perf_counter()
    for batch in batches:
        fn(batch)
    sync(device)
    return sum(len(b.y) for b in batches) / (time.perf_counter() - start)


def _status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status, KiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_probe(args) -> None:
    """Child process: peak memory growth (MiB) of one model over the benchmark batches, printed as JSON."""
    name, mode = args.memory_probe.split(":")
    dm, num_features = load_jets(args)
    device = torch.device(args.device)
    grouped, in_file_order, train = make_batches(dm, args.batch_size)
    # weights do not change memory
    jettag, weaver = build_models(num_features, dm.num_classes, None, device, args.path)
    train = train[: args.train_steps]
    model, run = (jettag, run_jettag) if name == "jettag" else (weaver, run_weaver)
    test = grouped if name == "jettag" else in_file_order
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4) if mode == "train" else None
    model.train(mode == "train")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # restart the peak (VmHWM) from the current RSS
        base = _status_kib("VmRSS")
    context = torch.no_grad() if optimizer is None else contextlib.nullcontext()
    with context:
        for batch in test if optimizer is None else train:
            run(model, batch, device, optimizer)
    sync(device)
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = (_status_kib("VmHWM") - base) / 2**10
    print(json.dumps({"peak_mib": peak}))


def measure_memory(argv: list[str], name: str, mode: str) -> float:
    out = subprocess.run([sys.executable, __file__, *argv, "--memory-probe", f"{name}:{mode}"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_probe:
        return memory_probe(args)
    device = torch.device(args.device)
    dm, num_features = load_jets(args)
    test, weaver_test, train_batches = make_batches(dm, args.batch_size)
    steps = args.train_steps
    jettag, weaver = build_models(num_features, dm.num_classes, train_batches[0], device, args.path)
    n_jets = sum(len(b) for b in test)

    # agreement in eval mode on identical batches, after weaver's trimmer warm-up (5 calls)
    jettag.eval()
    weaver.eval()
    diff = bf16_diff = self_diff = 0.0
    with torch.no_grad():
        for batch in weaver_test[:1] * 5:
            run_weaver(weaver, batch, device)
        by_jet = {}
        for batch in test:
            ours = run_jettag(jettag, batch, device)
            theirs = run_weaver(weaver, batch, device)
            diff = max(diff, (ours - theirs).abs().max().item())
            by_jet.update(zip(batch.entry.tolist(), theirs.cpu(), strict=True))
            if not args.no_bf16:
                low = run_jettag(jettag, batch, device, autocast=True)
                bf16_diff = max(bf16_diff, (low.float() - theirs).abs().max().item())
        # weaver against itself: the same jets batched in file order instead
        for batch in weaver_test:
            theirs = run_weaver(weaver, batch, device).cpu()
            again = torch.stack([by_jet[k] for k in batch.entry.tolist()])
            self_diff = max(self_diff, (theirs - again).abs().max().item())

    results: dict[str, list[float]] = {}

    def record(key, value):
        results.setdefault(key, []).append(value)

    jettag_opt = torch.optim.AdamW(jettag.parameters(), lr=1e-4)
    weaver_opt = torch.optim.AdamW(weaver.parameters(), lr=1e-4)
    warmup = train_batches[:2]
    for model, run, opt in ((jettag, run_jettag, jettag_opt), (weaver, run_weaver, weaver_opt)):
        model.train()
        for batch in warmup * 3:  # weaver's trimmer starts trimming after 5 steps
            run(model, batch, device, opt)
        model.eval()
        with torch.no_grad():
            run(model, test[0], device)

    same_test = [as_weaver_fed(b) for b in weaver_test]
    rng = np.random.default_rng(0)
    for rep in range(args.reps):
        first = rep % 2  # alternate which model goes first
        train = [train_batches[i] for i in rng.choice(len(train_batches), steps, replace=False)]
        rows = {
            "jettag": lambda b: run_jettag(jettag, b, device),
            "weaver": lambda b: run_weaver(weaver, b, device),
        }
        for name in sorted(rows, reverse=bool(first)):
            (jettag if name == "jettag" else weaver).eval()
            with torch.no_grad():
                record(f"{name} infer", timed(rows[name], test if name == "jettag" else weaver_test, device))
        jettag.eval()
        with torch.no_grad():  # the very tensors weaver's model gets, padded to 128
            record("jettag-same infer", timed(lambda b: run_jettag(jettag, b, device), same_test, device))
        if not args.no_bf16:
            with torch.no_grad():
                record(
                    "jettag-bf16 infer",
                    timed(lambda b: run_jettag(jettag, b, device, autocast=True), test, device),
                )
        steps_fn = {
            "jettag": lambda b: run_jettag(jettag, b, device, jettag_opt),
            "weaver": lambda b: run_weaver(weaver, b, device, weaver_opt),
        }
        for name in sorted(steps_fn, reverse=bool(first)):
            (jettag if name == "jettag" else weaver).train()
            record(f"{name} train", timed(steps_fn[name], train, device))
        jettag.train()
        record(
            "jettag-same train",
            timed(
                lambda b: run_jettag(jettag, b, device, jettag_opt), [as_weaver_fed(b) for b in train], device
            ),
        )
        if not args.no_bf16:
            jettag.train()
            record(
                "jettag-bf16 train",
                timed(lambda b: run_jettag(jettag, b, device, jettag_opt, True), train, device),
            )
        record("ratio infer", results["jettag infer"][-1] / results["weaver infer"][-1])
        record("ratio train", results["jettag train"][-1] / results["weaver train"][-1])
        record("ratio same infer", results["jettag-same infer"][-1] / results["weaver infer"][-1])
        record("ratio same train", results["jettag-same train"][-1] / results["weaver train"][-1])

    memory = {}
    if not args.no_memory:
        for name in ("jettag", "weaver"):
            for mode in ("infer", "train"):
                memory[f"{name} {mode}"] = measure_memory(argv, name, mode)

    med = {k: statistics.median(v) for k, v in results.items()}
    padded = np.mean([b.x.shape[1] for b in test])
    weaver_padded = np.mean([b.x.shape[1] for b in weaver_test])
    train_padded = np.mean([b.x.shape[1] for b in train_batches])
    real = np.mean(dm.dataset("test").counts)
    print(f"\n{n_jets} jets from {', '.join(args.files)}; {args.features} features ({num_features}), "
          f"batch {args.batch_size}, <= {MAX_PARTICLES} particles, mean {real:.1f} per jet")  # fmt: skip
    load = f", load average {os.getloadavg()[0]:.1f} at the end" if device.type == "cpu" else ""
    print(f"device {device} ({torch.get_num_threads()} threads{load}), torch {torch.__version__}, "
          f"jettag path {args.path}; "
          f"{args.reps} interleaved repetitions, {steps} training steps each; medians")  # fmt: skip
    print(
        f"jettag is fed as its DataModule feeds it: padded to the longest jet of each batch (mean "
        f"{padded:.1f} at inference, grouped by multiplicity; {train_padded:.1f} in training, random batches);"
    )
    print(
        f"weaver-core as weaver feeds it: padded to {MAX_PARTICLES}, batches in file order; its model trims them "
        f"(to the longest jet, mean {weaver_padded:.1f}, at inference; to a random 90-100% quantile in training)."
    )
    print(
        "jettag runs its transformer blocks in buckets of jets of similar multiplicity within each batch.\n"
    )
    print("| | jettag | weaver-core | jettag / weaver |")
    print("|---|---|---|---|")
    print(f"| inference, jets/s (eval, no_grad) | {med['jettag infer']:.1f} | {med['weaver infer']:.1f} "
          f"| {med['ratio infer']:.2f} |")  # fmt: skip
    print(f"| training, jets/s (fwd + bwd + AdamW) | {med['jettag train']:.1f} | {med['weaver train']:.1f} "
          f"| {med['ratio train']:.2f} |")  # fmt: skip
    print(f"| inference, jettag fed weaver's tensors (file order, padded to 128) | {med['jettag-same infer']:.1f} "
          f"| {med['weaver infer']:.1f} | {med['ratio same infer']:.2f} |")  # fmt: skip
    print(f"| training, jettag fed weaver's tensors (padded to 128) | {med['jettag-same train']:.1f} "
          f"| {med['weaver train']:.1f} | {med['ratio same train']:.2f} |")  # fmt: skip
    if memory:
        what = "peak RSS growth (VmHWM)" if device.type == "cpu" else "max_memory_allocated growth"
        for mode, label in (("infer", "inference"), ("train", "training")):
            a, b = memory[f"jettag {mode}"], memory[f"weaver {mode}"]
            print(f"| {label}, {what}, MiB | {a:.0f} | {b:.0f} | {a / b:.2f} |")
    print(f"| max abs diff of eval logits, float32, identical batches | {diff:.2e} | | |")
    print(f"| (weaver-core against itself, file-order vs grouped batches) | | {self_diff:.2e} | |")
    if not args.no_bf16:
        print(f"| jettag bf16 autocast: inference jets/s | {med['jettag-bf16 infer']:.1f} | | "
              f"{med['jettag-bf16 infer'] / med['weaver infer']:.2f} |")  # fmt: skip
        print(f"| jettag bf16 autocast: training jets/s | {med['jettag-bf16 train']:.1f} | | "
              f"{med['jettag-bf16 train'] / med['weaver train']:.2f} |")  # fmt: skip
        print(f"| max abs diff of eval logits, bf16 vs weaver float32 | {bf16_diff:.2e} | | |")
    spread = {k: f"{min(v):.2f}-{max(v):.2f}" for k, v in results.items() if k.startswith("ratio")}
    print(
        f"\nratio range over repetitions: inference {spread['ratio infer']}, training {spread['ratio train']}; "
        f"on weaver's tensors: inference {spread['ratio same infer']}, training {spread['ratio same train']}"
    )


if __name__ == "__main__":
    main()
