"""Fine-tuning a pretrained backbone on a new classification task, for every jettag model.

`FineTuner` is a `JetClassifier` whose network starts from a backbone: every tensor of the model
(ParT, ParT-plain, ParticleNet, PFN, P-CNN) except its classifier head (the model's `head_modules`)
comes from

- a jettag checkpoint (`.ckpt`, written by `jettag-train` with `task=classification`, `task=finetune`
  or `task=pretrain`) of the same model config: the `model.*` tensors of its state dict; or
- a weaver-core state dict (`.pt`, e.g. the published `ParT_kin.pt` or `ParticleNet_kin.pt`), read by
  `jettag.models.weaver.load_weaver_weights` (such files exist for ParT and ParticleNet only).

A jettag checkpoint also stores its run's particle features: they must be this run's, in the same
order, or the run stops naming the difference (weaver files store none; use the published order).
The head (the final Linear) is replaced by a freshly initialised one for the new classes; hidden FC
layers (`fc_params`) belong to the backbone and load with it (`jettag.models.base`).

Learning rates. The head, and the modules listed in `head_lr_modules` (e.g. the class attention of a
backbone from masked particle modelling, which never trained it), train at lr x `head_lr_factor`;
`layer_decay` < 1 scales each backbone layer's lr by `layer_decay ** (layers above it)`, counting the
layers at the backbone's lr (not those in `head_lr_modules`) in the order the model gives
(`JetTagger.layer_depths`: ParT's embeddings lowest, its final norm highest). `schedule` adds a per-step
factor (`jettag.tasks.schedules.FineTuneSchedule`): a warm-up, the backbone frozen for `freeze_steps`
and then ramped up linearly over `ramp_steps`, and a constant or cosine decay. While frozen, the
backbone gets no gradient (AdamW's moments and weight decay leave it alone) and runs in eval mode; after
that it trains as usual. The defaults (no warm-up, no freeze, constant) are the ParT paper's recipe:
backbone lr 1e-4, head x50, no scheduler.

`task.backbone=random` keeps the model as initialised (the seed's): with `freeze_backbone`, the
linear probe of a random backbone, the baseline a pretrained backbone's probe is compared with.

`freeze_backbone` trains only the head and the `head_lr_modules` (a linear probe): the backbone stays
in eval mode throughout, so dropout is off and batch-norm statistics do not move.
`freeze_batchnorm` keeps every batch-norm layer of the backbone in eval mode while the rest trains:
they normalise with the loaded running statistics, which do not move (their affine weights still
learn). The published ParticleNet needs it: its statistics were accumulated over padded slots too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from jettag.checkpoint import RunRecord, is_jettag_checkpoint, model_state, read_torch_file
from jettag.data.batch import JetBatch
from jettag.errors import ConfigError
from jettag.models.base import JetTagger, covers
from jettag.models.part import ParticleTransformer
from jettag.models.particlenet import ParticleNet
from jettag.tasks.classification import NO_WEIGHT_DECAY, JetClassifier, with_scheduler
from jettag.tasks.pretrain import feature_name
from jettag.tasks.schedules import FineTuneSchedule

log = logging.getLogger(__name__)

# weaver-core trains these; its files of other models do not exist
WEAVER_MODELS = (ParticleTransformer, ParticleNet)
SHOWN_COLUMNS = 3  # columns named in a feature-order message
RANDOM_BACKBONE = "random"  # task.backbone=random: keep the initialisation (a random backbone's probe)


def read_backbone(source: str | Path) -> tuple[Mapping | None, Path]:
    """(the jettag checkpoint's content, path), or (None, path) for a file that is not one (weaver)."""
    content = read_torch_file(source, key="task.backbone")
    return (content if is_jettag_checkpoint(content) else None), Path(source)


def _override_value(entry) -> str:
    """A features.particle_features entry in Hydra's command-line syntax."""
    if isinstance(entry, str):
        return entry
    values = entry.values() if isinstance(entry, Mapping) else entry
    return "[" + ",".join("null" if v is None else str(v) for v in values) + "]"


def check_features(path: Path, stored: Sequence | None, run: Sequence | None) -> None:
    """The backbone's particle features (`stored`) must be the run's, in the same order."""
    if stored is None or run is None:
        return
    theirs, ours = [feature_name(e) for e in stored], [feature_name(e) for e in run]
    if theirs == ours:
        return
    if sorted(theirs) == sorted(ours):
        columns = [i for i, (a, b) in enumerate(zip(theirs, ours, strict=True)) if a != b]
        shown = ", ".join(
            f"column {i} is {theirs[i]} there but {ours[i]} here" for i in columns[:SHOWN_COLUMNS]
        )
        more = (
            f", and {len(columns) - SHOWN_COLUMNS} more columns differ"
            if len(columns) > SHOWN_COLUMNS
            else ""
        )
        how = f"was trained on the same {len(ours)} particle features in another order ({shown}{more})"
    else:
        only_there = [n for n in theirs if n not in ours]
        only_here = [n for n in ours if n not in theirs]
        parts = ([f"{', '.join(only_there)} only there"] if only_there else []) + (
            [f"{', '.join(only_here)} only here"] if only_here else []
        )
        how = f"was trained on other particle features than this run's ({'; '.join(parts)})"
        if only_there:  # the run's files may not carry them (four-momenta only, e.g. the top-tagging tables)
            how += (
                "; if this run's files do not carry "
                f"{'it' if len(only_there) == 1 else 'them'}, pretrain a backbone on the features they do "
                "carry (e.g. features=kin for four-momenta only)"
            )
    override = "[" + ",".join(_override_value(e) for e in stored) + "]"
    raise ConfigError(
        f"task.backbone: '{path}' {how}; otherwise fine-tune with the backbone's own feature list, e.g. "
        f"'features.particle_features={override}' on the command line (quoted as shown), or a features "
        "config listing them in that order."
    )


def _fc_hint(key: str, record: RunRecord) -> str:
    """For a tensor of the hidden FC layers: they come with the backbone (`jettag.models.base`)."""
    if not covers("fc", key):
        return ""
    stored = record.section("model").get("fc_params")
    there = f" ({stored} there)" if stored is not None else ""
    return f"; hidden FC layers belong to the backbone, so model.fc_params must be the backbone's{there}"


def load_backbone(model: nn.Module, source: str | Path, feature_names: Sequence | None = None) -> list[str]:
    """Load every tensor but the head (the model's `head_modules`) from `source`; returns the keys loaded.

    From a jettag checkpoint each tensor must exist in the model with the same shape, and the
    checkpoint's particle features must be `feature_names` (when both are known); otherwise a
    `ConfigError` names the file and the first tensor (or the features) that does not fit.
    """
    from jettag.models.weaver import load_weaver_weights

    if not isinstance(model, JetTagger):
        raise ConfigError(
            f"task=finetune needs one of jettag's models (part, part_plain, part_small, particlenet, pfn, "
            f"pcnn), not {type(model).__name__}."
        )
    checkpoint, path = read_backbone(source)
    if checkpoint is None:
        if not isinstance(model, WEAVER_MODELS):
            raise ConfigError(
                f"task.backbone: '{path}' is not a jettag checkpoint, and weaver-core files exist only for "
                f"ParT and ParticleNet, not {type(model).__name__}; give the .ckpt of a jettag-train run of "
                "this model."
            )
        load_weaver_weights(model, path, keep_head=False, key="task.backbone")
        return [k for k in model.state_dict() if not model.is_head(k)]

    record = RunRecord.read(checkpoint)
    check_features(path, record.section("features").get("particle_features"), feature_names)
    state = {k: v for k, v in model_state(checkpoint).items() if not model.is_head(k)}
    if not state:
        raise ConfigError(f"task.backbone: '{path}' holds no model tensors; is it a jettag checkpoint?")
    stored_model = str(record.section("model").get("_target_", "")).rsplit(".", 1)[-1]
    hint = (
        f" (it holds a {stored_model}, this run builds a {type(model).__name__})"
        if stored_model and stored_model != type(model).__name__
        else ""
    )
    advice = "; build the model with the model and features configs the backbone was trained with."
    target = model.state_dict()
    for key, tensor in state.items():
        if key not in target:
            raise ConfigError(
                f"task.backbone: '{path}' has the tensor '{key}' that this model lacks{hint}{_fc_hint(key, record)}{advice}"
            )
        if target[key].shape != tensor.shape:
            raise ConfigError(
                f"task.backbone: '{path}' has '{key}' of shape {tuple(tensor.shape)} where the model needs "
                f"{tuple(target[key].shape)}{hint}{_fc_hint(key, record)}{advice}"
            )
    missing = [k for k in target if not model.is_head(k) and k not in state]
    if missing:
        raise ConfigError(
            f"task.backbone: '{path}' lacks the tensor '{missing[0]}'{hint}{_fc_hint(missing[0], record)}{advice}"
        )
    model.load_state_dict(state, strict=False)
    return list(state)


class FineTuner(JetClassifier):
    """Supervised classification starting from a pretrained backbone (see the module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        backbone: str | None,
        scheduler: Callable | None = None,
        class_names: Sequence[str] = (),
        background: int = 0,
        label_smoothing: float = 0.0,
        head_lr_factor: float = 50.0,
        freeze_backbone: bool = False,
        layer_decay: float = 1.0,
        head_lr_modules: Sequence[str] = ("head",),
        freeze_batchnorm: bool = False,
        schedule: Mapping | None = None,
        feature_names: Sequence | None = None,
    ):
        super().__init__(model, optimizer, scheduler, class_names, background, label_smoothing)
        if not isinstance(model, JetTagger):
            raise ConfigError(
                f"task=finetune needs one of jettag's models (part, part_plain, part_small, particlenet, pfn, "
                f"pcnn), not {type(model).__name__}."
            )
        if isinstance(layer_decay, bool) or not 0 < layer_decay <= 1:
            raise ConfigError(f"task.layer_decay={layer_decay} must lie in (0, 1]; 1 turns the decay off.")
        if head_lr_factor <= 0:
            raise ConfigError(f"task.head_lr_factor={head_lr_factor} must be positive.")
        self.head_lr_factor = float(head_lr_factor)
        self.freeze_backbone = bool(freeze_backbone)
        self.freeze_batchnorm = bool(freeze_batchnorm)
        self.layer_decay = float(layer_decay)
        self.head_lr_modules = tuple(str(m) for m in head_lr_modules)
        known = {name.split(".")[0] for name, _ in model.named_parameters()}
        unknown = [m for m in self.head_lr_modules if m not in known]
        if unknown:
            raise ConfigError(
                f"task.head_lr_modules: the model has no module '{unknown[0]}'; choose from {', '.join(sorted(known))}."
            )
        # the head and the modules trained like it: never frozen, at the head's lr
        self.fast_modules = tuple(dict.fromkeys((*model.head_modules, *self.head_lr_modules)))
        self.schedule = FineTuneSchedule.from_config(schedule)
        if self.scheduler_factory is not None and not self.schedule.constant:
            raise ConfigError(
                "task.scheduler and task.schedule are both set; use task.schedule (warm-up, freeze, ramp, "
                "decay) and set task.scheduler=null."
            )
        if not backbone:
            raise ConfigError(
                "task.backbone is not set; give the pretrained model, e.g. task.backbone=runs/pre/checkpoints/"
                "last.ckpt (a jettag checkpoint) or task.backbone=ParT_kin.pt (weaver-core weights)."
            )
        if backbone == RANDOM_BACKBONE:  # the untrained model: the baseline of a linear probe
            log.info("backbone: random, as initialised (task.backbone=%s)", RANDOM_BACKBONE)
        else:
            loaded = load_backbone(model, backbone, feature_names)
            log.info("backbone: %d tensors loaded from %s", len(loaded), backbone)
        model.reset_head(len(self.class_names) or model.num_classes)  # the new classes' head
        if self.freeze_backbone:
            for name, param in model.named_parameters():
                param.requires_grad_(self.is_fast(name))
        self.freeze_until = 0  # steps with a frozen backbone (task.schedule.freeze_steps, resolved)
        self.backbone_frozen = False  # frozen now, by the schedule

    def is_fast(self, name: str) -> bool:
        """Whether parameter `name` trains like the head (the head and `head_lr_modules`)."""
        return any(covers(module, name) for module in self.fast_modules)

    def backbone_batchnorms(self) -> Iterator[nn.Module]:
        for name, module in self.model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not self.model.is_head(name):
                yield module

    def _frozen(self) -> bool:
        return self.freeze_backbone or self.backbone_frozen

    def _set_modes(self) -> None:
        if not self.training:
            return
        if self._frozen():  # no dropout, no batch-norm statistics updates in the backbone
            self.model.eval()
            for name in self.fast_modules:
                module = getattr(self.model, name, None)
                if isinstance(module, nn.Module):
                    module.train()
            return
        self.model.train()  # after a frozen stretch too
        if self.freeze_batchnorm:
            for module in self.backbone_batchnorms():
                module.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self._set_modes()
        return self

    def set_backbone_frozen(self, frozen: bool) -> None:
        """Freeze (no gradients, eval mode) or release the backbone, for the schedule's first steps."""
        if frozen != self.backbone_frozen and not self.freeze_backbone:
            for name, param in self.model.named_parameters():
                if not self.is_fast(name):
                    param.requires_grad_(not frozen)
            self.backbone_frozen = frozen
        self._set_modes()

    def on_fit_start(self) -> None:
        strategy = self.trainer.strategy
        if self.freeze_until > 0 and self.trainer.world_size > 1 and hasattr(strategy, "_ddp_kwargs"):
            if not strategy._ddp_kwargs.get("find_unused_parameters", False):
                raise ConfigError(
                    "task.schedule.freeze_steps > 0 under DDP leaves the backbone without gradients for the "
                    "first steps; pass trainer.strategy=ddp_find_unused_parameters_true."
                )

    def on_train_batch_start(self, batch, batch_idx) -> None:
        # the step decides whether the backbone is frozen; Lightning may also have switched modules
        # back to train mode (e.g. after validation)
        self.set_backbone_frozen(self.trainer.global_step < self.freeze_until)

    def forward(self, batch: JetBatch) -> torch.Tensor:
        if self._frozen() and set(self.fast_modules) <= set(self.model.head_modules):
            with torch.no_grad():  # nothing in the backbone trains: keep no graph of it
                features = self.model.forward_features(*batch.inputs)
            return self.model.forward_head(features)
        return super().forward(batch)

    def parameter_groups(self) -> list[dict]:
        """Optimizer groups: per backbone depth (lr scale) and weight decay or not, and the head's.

        Each group carries `backbone` (True for backbone layers), which the schedule reads.
        """
        base_lr = getattr(self.optimizer_factory, "keywords", {}).get("lr", 1e-3)
        depths = self.model.layer_depths()
        top = max((d for name, d in depths.items() if not self.is_fast(name)), default=0)
        groups: dict[tuple[bool, float, bool], list[nn.Parameter]] = {}
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            fast = self.is_fast(name)
            scale = self.head_lr_factor if fast else self.layer_decay ** (top - depths[name])
            no_decay = param.ndim < 2 or name.split(".")[-1] in NO_WEIGHT_DECAY
            groups.setdefault((fast, scale, no_decay), []).append(param)
        return [
            {
                "params": params,
                "lr": base_lr * scale,
                "backbone": not fast,
                **({"weight_decay": 0.0} if no_decay else {}),
            }
            for (fast, scale, no_decay), params in sorted(groups.items(), key=lambda item: item[0])
        ]

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameter_groups())
        if self.schedule.constant:
            return with_scheduler(self, optimizer)  # task.scheduler, if any
        total = self.trainer.estimated_stepping_batches
        if not 0 < total < float("inf"):
            raise ConfigError(
                "task.schedule needs a finite number of steps; set trainer.max_epochs or trainer.max_steps."
            )
        schedule = self.schedule.resolve(int(total))
        self.freeze_until = schedule.freeze_steps
        log.info(
            "fine-tuning schedule over %d steps: warm-up %d, backbone frozen %d, ramp %d, decay %s",
            schedule.total_steps, schedule.warmup_steps, schedule.freeze_steps, schedule.ramp_steps, schedule.decay,
        )  # fmt: skip

        def factor(backbone: bool) -> Callable[[int], float]:
            return lambda step: schedule.factor(step, backbone)

        scheduler = LambdaLR(optimizer, [factor(group["backbone"]) for group in optimizer.param_groups])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
