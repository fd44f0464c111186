"""jettag-eval: evaluate a trained run or checkpoint on test files and write the report.

    jettag-eval run_dir=outputs/2026-11-22/10-00-00
    jettag-eval ckpt_path=run/checkpoints/best.ckpt data.test_files='[other/*.root]'

The data settings are those the model was trained with; any value set under `data` replaces them.
`data.labels` may list some of the model's classes (e.g. label_QCD and label_Tbqq of a JetClass model
on top-vs-QCD files): the scores are then renormalized over those classes. The device and precision
are Lightning's, as in jettag-train: trainer.accelerator=cpu, trainer.precision=bf16-mixed, trainer=gpu.
The report goes to <run_dir>/eval unless hydra.run.dir says otherwise.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from jettag.cli import hydra_app
from jettag.data.datamodule import UNLABELLED
from jettag.errors import ConfigError
from jettag.inference import checkpoint_of, load_trained
from jettag.pipeline import (
    build_datamodule,
    build_trainer,
    count_parameters,
    with_run_data,
    write_test_report,
)
from jettag.tasks.classification import JetClassifier

log = logging.getLogger("jettag.eval")


class ClassSubset(nn.Module):
    """The logits of some of a model's classes: their softmax is each class's score renormalized over them,
    s_X / sum of the listed classes' scores (for two, the JetClass convention s_X / (s_X + s_QCD))."""

    def __init__(self, model: nn.Module, columns: list[int]):
        super().__init__()
        self.model = model
        self.register_buffer("columns", torch.tensor(columns), persistent=False)

    def forward(self, x: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model(x, v, mask)[:, self.columns]


def class_subset(model: nn.Module, trained: list[str], wanted: list[str]) -> nn.Module:
    """`model` restricted to the classes `wanted` (data.labels), which must be classes it was trained for."""
    unknown = [name for name in wanted if name not in trained]
    if unknown or len(set(wanted)) < len(wanted) or len(wanted) < 2:
        raise ConfigError(
            f"data.labels gives the classes {', '.join(wanted)} but the model was trained for "
            f"{', '.join(trained)}; list those label branches or two or more of them (their scores are "
            "then renormalized over the listed classes)."
        )
    log.info(
        "evaluating %d of the model's %d classes; scores renormalized over them", len(wanted), len(trained)
    )
    return ClassSubset(model, [trained.index(name) for name in wanted])


def evaluate(cfg: DictConfig) -> float:
    ckpt_path = checkpoint_of(cfg.run_dir, cfg.ckpt_path)
    trainer = build_trainer(cfg, enable_checkpointing=False)
    if trainer.world_size > 1:
        raise ConfigError(
            f"jettag-eval runs in one process, but trainer.devices={cfg.trainer.devices} and "
            f"trainer.num_nodes={cfg.trainer.num_nodes} make {trainer.world_size}; set trainer.devices=1."
        )
    # the network with the checkpoint's weights (a `model.weights` file the run started from is not needed)
    trained = load_trained(ckpt_path, cfg.get("features") or None)
    train_cfg, features, model = trained.config, trained.features, trained.model

    if trained.class_names == [UNLABELLED]:
        raise ConfigError(
            f"jettag-eval evaluates a classifier, and {ckpt_path} was trained on unlabelled jets (data.labels: "
            "null), e.g. pretrained; fine-tune it (experiment=finetune_part task.backbone=...) and evaluate that run."
        )
    data_cfg = with_run_data(train_cfg["data"], cfg.data)
    if data_cfg.get("labels") is None:
        if OmegaConf.is_missing(cfg.data, "labels"):
            raise ConfigError(
                f"jettag-eval needs labelled jets, and {ckpt_path} names no label branches (its data.labels is "
                "null: unlabelled jets); give those of the test files, e.g. data.labels=[label_QCD,label_Tbqq]."
            )
        raise ConfigError(
            "data.labels=null means unlabelled jets, but jettag-eval needs labelled ones; give the label "
            "branches of the test files, e.g. data.labels=[label_QCD,label_Tbqq], or score unlabelled jets "
            "with jettag-predict."
        )
    data_cfg["train_files"] = data_cfg["val_files"] = None
    datamodule = build_datamodule(data_cfg, features, train_cfg.get("seed", 0))
    if datamodule.class_names != trained.class_names:
        model = class_subset(model, trained.class_names, datamodule.class_names)
    datamodule.setup("test")

    task = JetClassifier(
        model, optimizer=None, class_names=datamodule.class_names, background=datamodule.background
    )
    output_dir = Path(cfg.paths.output_dir)
    trainer.test(task, datamodule=datamodule, verbose=False)
    info = {
        "model": type(trained.model).__name__,
        "parameters": count_parameters(model),
        "features": features.name,
        "checkpoint": str(ckpt_path),
        "test_files": list(data_cfg["test_files"]),
    }
    metrics = write_test_report(task, datamodule, output_dir, info)
    log.info("test: accuracy %.4f, AUC %.4f, Rej50 %.1f; report in %s",
             metrics["accuracy"], metrics["auc"], metrics["rej50"], output_dir / "report.md")  # fmt: skip
    return float(metrics["auc"])


main = hydra_app("eval", "jettag-eval")(evaluate)

if __name__ == "__main__":
    main()
