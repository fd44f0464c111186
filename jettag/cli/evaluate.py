"""jettag-eval: evaluate a trained run or checkpoint on test files and write the report.

    jettag-eval run_dir=outputs/2026-11-22/10-00-00
    jettag-eval ckpt_path=run/checkpoints/best.ckpt data.test_files='[other/*.root]'

The data settings are those the model was trained with; any value set under `data` replaces them.
The report goes to <run_dir>/eval unless hydra.run.dir says otherwise.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from omegaconf import DictConfig

from jettag.cli import hydra_app
from jettag.errors import ConfigError
from jettag.pipeline import (
    as_dict,
    build_datamodule,
    build_features,
    build_model,
    count_parameters,
    load_checkpoint,
    write_test_report,
)
from jettag.tasks.classification import JetClassifier

log = logging.getLogger("jettag.eval")


def evaluate(cfg: DictConfig) -> float:
    if cfg.ckpt_path:
        ckpt_path = Path(cfg.ckpt_path)
    elif cfg.run_dir:
        ckpt_path = Path(cfg.run_dir) / "checkpoints" / "best.ckpt"
        if not ckpt_path.is_file():
            raise ConfigError(
                f"run_dir: '{cfg.run_dir}' has no checkpoints/best.ckpt; is it a jettag-train run directory?"
            )
    else:
        raise ConfigError(
            "give the run to evaluate, run_dir=<training run directory>, or a checkpoint, ckpt_path=<file>."
        )
    checkpoint = load_checkpoint(ckpt_path)
    meta = checkpoint["jettag"]
    train_cfg = meta["config"]

    data_cfg = dict(train_cfg["data"])
    data_cfg.update({k: v for k, v in as_dict(cfg.data).items() if v is not None})
    data_cfg["train_files"] = data_cfg["val_files"] = None
    features = build_features(train_cfg["features"])
    datamodule = build_datamodule(data_cfg, features, train_cfg.get("seed", 0))
    if datamodule.num_classes != len(meta["class_names"]):
        raise ConfigError(
            f"data.labels gives {datamodule.num_classes} classes but the model was trained for "
            f"{len(meta['class_names'])} ({', '.join(meta['class_names'])}); list matching label branches."
        )
    datamodule.setup("test")

    # the checkpoint holds the weights: a `model.weights` file the run started from is not needed
    model = build_model(train_cfg["model"], features.num_features, datamodule.num_classes, load_weights=False)
    task = JetClassifier(
        model, optimizer=None, class_names=datamodule.class_names, background=datamodule.background
    )
    task.load_state_dict(checkpoint["state_dict"])
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
        "model": type(model).__name__,
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
