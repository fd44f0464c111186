"""Cost of a pretraining step, against a supervised classification step measured in the same run.

    python scripts/bench_pretraining.py [--batch-size 256] [--max-particles 32] [--steps 5] [--reps 3]

Times optimizer steps (forward, backward, AdamW) of the small ParT (configs/model/part_small.yaml,
kinpid inputs) on batches of the shipped sample for: supervised classification (the reference),
contrastive pretraining (two augmented views, features recomputed), masked particle modelling (MPMv2)
and classification plus MPM. Prints seconds per step (median over `--reps` passes, the objectives
alternating within each pass), the ratio to classification, and the minutes one epoch of a
100,000-jet pretraining set takes at that speed: what the pretraining experiments' epochs are chosen
from (each must fit in 30 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from jettag.cli import register_resolvers
from jettag.paths import config_dir
from jettag.pipeline import build_datamodule, build_features, build_model
from jettag.tasks import ContrastivePretrainer, JetClassifier, MaskedParticlePretrainer

PRETRAINING_SET = 100_000


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-particles", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per objective and pass")
    parser.add_argument("--reps", type=int, default=3, help="passes (the median is reported)")
    args = parser.parse_args(argv)

    register_resolvers()
    overrides = [f"features.max_particles={args.max_particles}", f"data.batch_size={args.batch_size}"]
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        cfg = compose("train", overrides=overrides)
    features = build_features(cfg.features)
    datamodule = build_datamodule(cfg.data, features, 0)
    datamodule.setup("fit")
    batches = [b for _, b in zip(range(args.steps + 1), datamodule.train_dataloader(), strict=False)]
    fitted = datamodule.features
    classes = datamodule.class_names
    adamw = functools.partial(torch.optim.AdamW, lr=1e-3)

    def model():
        torch.manual_seed(0)
        return build_model(cfg.model, features.num_features, len(classes), feature_names=features.names)

    objectives = {
        "classification (reference)": (
            lambda: JetClassifier(model(), adamw),
            lambda task, b: F.cross_entropy(task(b), b.y),
        ),
        "contrastive": (
            lambda: ContrastivePretrainer(model(), adamw, features=fitted),
            lambda task, b: task.loss(b)[0],
        ),
        "masked particle modelling": (
            lambda: MaskedParticlePretrainer(model(), adamw, features=fitted),
            lambda task, b: task.losses(b)["loss"],
        ),
        "classification + MPM": (
            lambda: MaskedParticlePretrainer(
                model(), adamw, features=fitted, classification_weight=1.0, class_names=classes
            ),
            lambda task, b: task.losses(b)["loss"],
        ),
    }
    tasks = {name: make() for name, (make, _) in objectives.items()}
    optimizers = {name: torch.optim.AdamW(task.parameters(), 1e-3) for name, task in tasks.items()}
    times: dict[str, list[float]] = {name: [] for name in objectives}
    for _ in range(args.reps):
        for name, (_, loss_of) in objectives.items():
            task, optimizer = tasks[name].train(), optimizers[name]
            for i, batch in enumerate(batches):
                if i == 1:  # the first step warms up (allocations, kernels)
                    start = time.perf_counter()
                loss = loss_of(task, batch)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            times[name].append((time.perf_counter() - start) / (len(batches) - 1))

    reference = statistics.median(times["classification (reference)"])
    print(f"small ParT, kinpid, {args.max_particles} particles, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads; median of {args.reps} passes of {args.steps} steps")  # fmt: skip
    print(f"{'objective':28s} {'s/step':>8s} {'ratio':>6s} {'min per 100k-jet epoch':>23s}")
    for name, values in times.items():
        per_step = statistics.median(values)
        minutes = per_step * PRETRAINING_SET / args.batch_size / 60
        print(f"{name:28s} {per_step:8.3f} {per_step / reference:6.2f} {minutes:23.1f}")


if __name__ == "__main__":
    main()
