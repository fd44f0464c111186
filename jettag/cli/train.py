"""jettag-train: train a tagger, evaluate its best checkpoint on the test files, write the report."""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path

import hydra
import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from jettag.cli import hydra_app
from jettag.data.memory import give_back_freed_memory
from jettag.errors import ConfigError
from jettag.pipeline import (
    as_dict,
    build_datamodule,
    build_features,
    build_model,
    build_trainer,
    check_required,
    count_parameters,
    resolve_ckpt_path,
    task_parameters,
    write_test_report,
)
from jettag.tasks import JetClassifier
from jettag.tasks.memory import ResidentMemory
from jettag.threads import set_compute_threads

log = logging.getLogger("jettag.train")


def build_task(task_cfg: DictConfig, model, datamodule) -> L.LightningModule:
    """The task of `task_cfg` training `model` on the data of `datamodule`: its class names and
    background, and for the tasks that take `features` (pretraining recomputes input features) its
    feature set with the numbers fitted on the training data."""
    optimizer = task_cfg.get("optimizer") or {}
    # lr 0 is allowed: a run that must not move the weights
    if "lr" in optimizer and not float(optimizer.lr) >= 0:
        raise ConfigError(f"task.optimizer.lr={optimizer.lr} must not be negative.")
    if "weight_decay" in optimizer and not float(optimizer.weight_decay) >= 0:
        raise ConfigError(f"task.optimizer.weight_decay={optimizer.weight_decay} must not be negative.")
    extra = {}
    if "features" in task_parameters(task_cfg):
        extra["features"] = datamodule.features
    # the objects are passed to the partial, not to instantiate: Hydra would turn the feature set (a
    # dataclass) into a config node
    factory = hydra.utils.instantiate(task_cfg, _partial_=True)
    return factory(model=model, class_names=datamodule.class_names, background=datamodule.background, **extra)


def train(cfg: DictConfig) -> float | None:
    """Fit, test, report; returns the best validation AUC (the metric sweeps optimize)."""
    check_required(cfg, "data")
    L.seed_everything(cfg.seed, workers=True)
    threads = set_compute_threads(cfg.data.get("num_workers", 0) or 0)
    log.info(
        "%d compute threads (the CPUs this job may use, less data.num_workers; OMP_NUM_THREADS overrides)",
        threads,
    )
    run_dir = Path(cfg.paths.output_dir)
    features = build_features(cfg.features)
    datamodule = build_datamodule(cfg.data, features, cfg.seed)
    datamodule.setup("fit")  # read the data now: input errors surface before training starts
    model = build_model(
        cfg.model, features.num_features, datamodule.num_classes, feature_names=features.names
    )
    task = build_task(cfg.task, model, datamodule)
    if datamodule.label_spec is None and isinstance(task, JetClassifier):
        raise ConfigError(
            "data.labels is null (unlabelled jets), but task "
            f"{cfg.task._target_} learns classes; list the label branches in data.labels, or pretrain "
            "without labels with task=pretrain or task=contrastive."
        )
    task.run_config = as_dict(cfg)
    # numbers fitted on the training data (data.standardization / `auto` features) travel with the checkpoint
    task.run_config["features"] = datamodule.features.to_config()
    for path in datamodule.save_fit(run_dir):
        log.info("fitted on the training data: %s", path)
    trainer = build_trainer(cfg, task=task)
    log.info("%s: %d parameters; run directory %s", type(model).__name__, count_parameters(model), run_dir)

    start = time.perf_counter()
    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=resolve_ckpt_path(cfg.ckpt_path, run_dir))
    except SIGTERMException:
        # Lightning stopped after the current batch; ResumeBatchPosition saved last.ckpt there
        log.warning("stopped by SIGTERM at step %d; ckpt_path=last resumes the run", trainer.global_step)
        raise SystemExit(128 + signal.SIGTERM) from None
    train_seconds = time.perf_counter() - start
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_score if checkpoint is not None else None
    if not cfg.test or not hasattr(task, "predictions"):  # a pretraining task has no classifier to test
        return float(best) if best is not None else None

    give_back_freed_memory()  # training's freed tensors, before testing and the report
    trainer.test(
        task, datamodule=datamodule, ckpt_path="best" if checkpoint and checkpoint.best_model_path else None
    )
    info = {
        "model": type(model).__name__,
        "parameters": count_parameters(model),
        "features": features.name,
        "checkpoint": checkpoint.best_model_path if checkpoint else None,
        "epochs": trainer.current_epoch,
        "optimizer_steps": trainer.global_step,
        "processes": trainer.world_size,
        "train_seconds": round(train_seconds, 1),
        "best_val_auc": float(best) if best is not None else None,
        "seed": cfg.seed,
        "train_files": list(cfg.data.train_files),
        "test_files": list(cfg.data.test_files),
    }
    for callback in trainer.callbacks:
        if isinstance(callback, ResidentMemory):
            info.update(callback.summary())
    if not trainer.is_global_zero:  # DDP: the first process writes the report of the gathered predictions
        return float(best) if best is not None else None
    metrics = write_test_report(task, datamodule, run_dir, info)
    log.info("test: accuracy %.4f, AUC %.4f, Rej50 %.1f; report in %s",
             metrics["accuracy"], metrics["auc"], metrics["rej50"], run_dir / "report.md")  # fmt: skip
    return float(best) if best is not None else None


main = hydra_app("train", "jettag-train")(train)

if __name__ == "__main__":
    main()
