"""Building the pieces of a run from its configuration, shared by `jettag-train`, `jettag-eval` and
`jettag-predict`."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import hydra
import lightning as L
from hydra.errors import InstantiationException
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf
from torch import nn

from jettag.checkpoint import AtomicCheckpointIO, read_torch_file
from jettag.data.datamodule import JetDataModule
from jettag.errors import ConfigError
from jettag.evaluation.report import write_report
from jettag.features.sets import FeatureSet
from jettag.models.weaver import attach_weights
from jettag.tasks.classification import JetClassifier

log = logging.getLogger(__name__)


def as_dict(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def check_required(cfg: DictConfig, group: str) -> None:
    """Name the first mandatory (`???`) value of `group` that is still unset."""
    for key in OmegaConf.missing_keys(cfg[group]):
        raise ConfigError(f"{group}.{key} is not set; pass it on the command line, e.g. {group}.{key}=...")


def build_features(features_cfg) -> FeatureSet:
    return FeatureSet.from_config(as_dict(features_cfg))


def build_datamodule(data_cfg, features: FeatureSet, seed: int = 0) -> JetDataModule:
    settings = as_dict(data_cfg)
    settings.pop("_target_", None)
    try:
        return JetDataModule(features=features, seed=seed, **settings)
    except TypeError as err:
        raise ConfigError(
            f"the data config has a setting jettag does not know ({err}); check its spelling."
        ) from None


def build_model(
    model_cfg,
    input_dim: int,
    num_classes: int,
    load_weights: bool = True,
    feature_names: Sequence[str] | None = None,
) -> nn.Module:
    """The model of `model_cfg`; `weights` (a weaver-core ParT or ParticleNet state dict) is loaded into it
    if set. Models that find inputs by name (ParticleNet's `points`) are given `feature_names`."""
    settings = as_dict(model_cfg)
    weights = settings.pop("weights", None)
    check_model_sizes(settings)
    extra = {}
    if feature_names is not None and "feature_names" in _parameters(settings.get("_target_")):
        extra["feature_names"] = list(feature_names)
    model = hydra.utils.instantiate(settings, input_dim=input_dim, num_classes=num_classes, **extra)
    if weights and load_weights:
        attach_weights(model, weights)
    return model


def check_model_sizes(settings: Mapping, key: str = "model") -> None:
    """Widths, depths and counts (integers, alone or in lists) must be at least 1; dropout rates and
    other fractions lie in [0, 1). One sentence naming the key otherwise (the model would fail deep in
    torch, or build a layer of no width)."""
    for name, value in settings.items():
        if name.startswith("_") or isinstance(value, bool):
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        flat = [v for item in values for v in (item if isinstance(item, (list, tuple)) else [item])]
        if "dropout" in name:
            if any(isinstance(v, (int, float)) and not 0 <= v < 1 for v in flat):
                raise ConfigError(f"{key}.{name}={value}: a dropout rate lies in [0, 1).")
        elif any(isinstance(v, int) and not isinstance(v, bool) and v < 1 for v in flat):
            raise ConfigError(f"{key}.{name}={value}: sizes, depths and counts must be at least 1.")


def _parameters(target: str | None) -> set[str]:
    try:
        return set(inspect.signature(hydra.utils.get_class(target)).parameters) if target else set()
    except Exception:  # not a class jettag can inspect: instantiate reports what is wrong
        return set()


def task_parameters(task_cfg) -> set[str]:
    """The keyword arguments the task of `task_cfg` takes."""
    return _parameters(task_cfg.get("_target_"))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def with_run_data(run_data: Mapping, data_cfg: DictConfig) -> dict:
    """The data settings of a run (the checkpoint's) with those of `data_cfg` (jettag-eval's or
    jettag-predict's `data`) that are set replacing them: a key left at ??? keeps the run's value."""
    settings = dict(run_data)
    given = as_dict(data_cfg)
    settings.update({key: given[key] for key in data_cfg if not OmegaConf.is_missing(data_cfg, key)})
    return settings


AUTO = "auto"  # callbacks' monitor / mode: the task's (`monitor` of the task class)


def callback_configs(cfg: DictConfig, task=None) -> list[tuple[DictConfig, dict]]:
    """The callbacks of `cfg` with what to override when instantiating each: `monitor: auto` and
    `mode: auto` become the task's metric and direction (val/auc, max for classification; val/loss,
    min for pretraining)."""
    configs = []
    for key, callback in (cfg.get("callbacks") or {}).items():
        if not callback:
            continue
        overrides = {}
        if callback.get("monitor") == AUTO or callback.get("mode") == AUTO:
            declared = getattr(task, "monitor", None)
            if declared is None:
                raise ConfigError(
                    f"callbacks.{key}.monitor=auto takes the task's metric, but {type(task).__name__} declares "
                    f"none; set callbacks.{key}.monitor and mode."
                )
            if callback.get("monitor") == AUTO:
                overrides["monitor"] = declared[0]
            if callback.get("mode") == AUTO:
                overrides["mode"] = declared[1]
        configs.append((callback, overrides))
    return configs


def build_trainer(cfg: DictConfig, task=None, **overrides) -> L.Trainer:
    """The Lightning Trainer of `cfg.trainer`, with the callbacks and logger groups of `cfg` if it has them
    (a callback's `monitor: auto` follows `task`, see `callback_configs`)."""
    callbacks = [hydra.utils.instantiate(c, **over) for c, over in callback_configs(cfg, task)]
    loggers = [hydra.utils.instantiate(c) for c in (cfg.get("logger") or {}).values()]
    settings = {"callbacks": callbacks, "logger": loggers or False, **overrides}
    plugins = list(cfg.trainer.get("plugins") or [])
    if "plugins" not in overrides and not any("CheckpointIO" in str(p) for p in plugins):
        # hydra instantiates the user's plugins; ours is added as an object
        settings["plugins"] = [hydra.utils.instantiate(p) for p in plugins] + [AtomicCheckpointIO()]
    try:
        return hydra.utils.instantiate(cfg.trainer, **settings)
    except InstantiationException as err:  # Lightning's reason, e.g. no such device on this machine
        if not isinstance(err.__cause__, (MisconfigurationException, RuntimeError, ValueError)):
            raise
        reason = str(err.__cause__).splitlines()[0].rstrip(".!")
        hint = "" if isinstance(err.__cause__, ValueError) else "; trainer.accelerator=cpu runs on the CPU"
        trainer = cfg.trainer
        raise ConfigError(
            f"trainer.accelerator={trainer.accelerator}, trainer.devices={trainer.devices}, "
            f"trainer.precision={trainer.precision}: {reason}{hint}."
        ) from None


def resolve_ckpt_path(ckpt_path: str | None, run_dir: Path) -> str | None:
    """`last` means the run directory's last checkpoint, if there is one (a fresh start if not)."""
    if ckpt_path in (None, "", "null"):
        return None
    if ckpt_path == "last":
        last = run_dir / "checkpoints" / "last.ckpt"
        return str(last) if last.is_file() else None
    content = read_torch_file(ckpt_path, key="ckpt_path")  # one sentence for a directory or another file
    if not isinstance(content, dict) or "state_dict" not in content or "global_step" not in content:
        raise ConfigError(
            f"ckpt_path: '{ckpt_path}' is not a training checkpoint (Lightning's, with the optimizer state) to "
            "resume from; to start from a model's weights, use task=finetune task.backbone=... instead."
        )
    return str(ckpt_path)


def write_test_report(task: JetClassifier, datamodule: JetDataModule, output_dir: Path, info: dict) -> dict:
    """metrics.json, report.md, plots and predictions.root for the last `trainer.test` of `task`."""
    jets = datamodule.dataset("test").jets
    preds = task.predictions
    info = {**info, "jets": datamodule.summary()}
    return write_report(
        output_dir,
        preds["labels"],
        preds["scores"],
        datamodule.class_names,
        truth=jets.truth,
        observers=jets.observers,
        background=datamodule.background,
        info=info,
    )
