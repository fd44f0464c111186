"""jettag-eval: evaluate a trained run or checkpoint on test files and write the report.

    jettag-eval run_dir=outputs/2026-11-22/10-00-00
    jettag-eval ckpt_path=run/checkpoints/best.ckpt data.test_files='[other/*.root]'

The data settings are those the model was trained with; any value set under `data` replaces them.
`data.labels` may list some of the model's classes (e.g. label_QCD and label_Tbqq of a JetClass model
on top-vs-QCD files): the scores are then renormalized over those classes.
The report goes to <run_dir>/eval unless hydra.run.dir says otherwise.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig
from torch import nn

from jettag.cli import hydra_app
from jettag.errors import ConfigError
from jettag.inference import checkpoint_of, load_trained
from jettag.pipeline import as_dict, build_datamodule, count_parameters, write_test_report
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
    # the network with the checkpoint's weights (a `model.weights` file the run started from is not needed)
    trained = load_trained(ckpt_path, cfg.get("features") or None)
    train_cfg, features, model = trained.config, trained.features, trained.model

    data_cfg = dict(train_cfg["data"])
    data_cfg.update({k: v for k, v in as_dict(cfg.data).items() if v is not None})
    data_cfg["train_files"] = data_cfg["val_files"] = None
    datamodule = build_datamodule(data_cfg, features, train_cfg.get("seed", 0))
    if datamodule.class_names != trained.class_names:
        model = class_subset(model, trained.class_names, datamodule.class_names)
    datamodule.setup("test")

    task = JetClassifier(
        model, optimizer=None, class_names=datamodule.class_names, background=datamodule.background
    )
    output_dir = Path(cfg.paths.output_dir)
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=1,
        precision=cfg.precision,
        logger=False,
        enable_checkpointing=False,
        default_root_dir=output_dir,
    )
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
