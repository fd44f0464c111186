"""Parameters and multiply-adds per jet of every model config in configs/model/, for 10 classes.

    python scripts/model_summary.py [--particles 128] [--classes 10]

Each config is built as jettag-train builds it (Hydra composition, so `defaults` lists apply) for
the kin (7), kinpid (13) and full (17) input sizes. MACs are measured with FlopCounterMode on one
jet of `--particles` real particles (jettag.models.complexity). The last columns quote the ParT
paper (JetClass, full inputs, 10 classes, 128 particles), whose "FLOPs" are multiply-adds.
"""

from __future__ import annotations

import argparse

from hydra import compose, initialize_config_dir

from jettag.cli import register_resolvers
from jettag.models.complexity import count_macs, count_parameters
from jettag.paths import config_dir
from jettag.pipeline import build_model

INPUT_SIZES = {"kin": 7, "kinpid": 13, "full": 17}
# ParT paper, Table: parameters and "FLOPs" (multiply-adds) for the full inputs and 10 classes
PUBLISHED = {
    "pfn": (86.1e3, 4.62e6),
    "pcnn": (354e3, 15.5e6),
    "particlenet": (370e3, 540e6),
    "part_plain": (2.13e6, 260e6),
    "part": (2.14e6, 340e6),
}


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--particles", type=int, default=128)
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args()

    register_resolvers()
    names = sorted(p.stem for p in (config_dir() / "model").glob("*.yaml"))
    header = ["model", *(f"params {s}" for s in INPUT_SIZES), *(f"MMACs {s}" for s in INPUT_SIZES),
              "published params", "published MMACs"]  # fmt: skip
    print(f"{args.particles} particles, {args.classes} classes; MACs per jet (FLOPs / 2)\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        for name in names:
            model_cfg = compose("train", overrides=[f"model={name}"]).model
            params, macs = [], []
            for size in INPUT_SIZES.values():
                model = build_model(model_cfg, size, args.classes)
                params.append(f"{count_parameters(model):,}")
                macs.append(f"{count_macs(model, size, args.particles) / 1e6:.4g}")
            published = PUBLISHED.get(name)
            quoted = [f"{published[0]:,.0f}", f"{published[1] / 1e6:.4g}"] if published else ["-", "-"]
            print("| " + " | ".join([name, *params, *macs, *quoted]) + " |")


if __name__ == "__main__":
    main()
