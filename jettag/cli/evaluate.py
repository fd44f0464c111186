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
from jettag.inference import checkpoint_of, load_trained
from jettag.pipeline import as_dict, build_datamodule, count_parameters, write_test_report
from jettag.tasks.classification import JetClassifier

log = logging.getLogger("jettag.eval")


def evaluate(cfg: DictConfig) -> float:
    ckpt_path = checkpoint_of(cfg.run_dir, cfg.ckpt_path)
    # the network with the checkpoint's weights (a `model.weights` file the run started from is not needed)
    trained = load_trained(ckpt_path, cfg.get("features") or None)
    train_cfg, features, model = trained.config, trained.features, trained.model

    data_cfg = dict(train_cfg["data"])
    data_cfg.update({k: v for k, v in as_dict(cfg.data).items() if v is not None})
    data_cfg["train_files"] = data_cfg["val_files"] = None
    datamodule = build_datamodule(data_cfg, features, train_cfg.get("seed", 0))
    if datamodule.num_classes != len(trained.class_names):
        raise ConfigError(
            f"data.labels gives {datamodule.num_classes} classes but the model was trained for "
            f"{len(trained.class_names)} ({', '.join(trained.class_names)}); list matching label branches."
        )
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
