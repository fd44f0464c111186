"""Fine-tuning a pretrained ParT backbone on a new classification task.

`FineTuner` is a `JetClassifier` whose network starts from a backbone: every tensor of the
ParticleTransformer except the classifier head comes from

- a jettag checkpoint (`.ckpt`, written by `jettag-train` with `task=classification`, `task=finetune`
  or `task=pretrain`): the `model.*` tensors of its state dict, or
- a weaver-core ParT state dict (`.pt`, e.g. the published `ParT_kin.pt`), read by
  `jettag.models.weaver.load_weaver_weights`.

The head is replaced by a freshly initialised one for the new classes. Optimisation follows the
published fine-tuning recipe when configured so (`experiment=finetune_part`): backbone lr 1e-4,
head lr x50, no scheduler. `freeze_backbone` trains the head only (a linear probe: the backbone
stays in eval mode, so dropout is off and batch-norm statistics do not move); `layer_decay` < 1
scales the learning rate of each backbone layer by `layer_decay ** (depth of the layers above it)`
(layer-wise learning-rate decay: embeddings lowest, class-attention blocks highest).
`head_lr_modules` lists the top-level modules trained at the head's learning rate: by default the head
alone; a backbone from masked particle modelling (`task=pretrain`) never trained its class token and
class-attention blocks, so `[head, cls_blocks, cls_token, norm]` lets those learn as fast as the head.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from jettag.errors import ConfigError
from jettag.tasks.classification import NO_WEIGHT_DECAY, JetClassifier, with_scheduler

log = logging.getLogger(__name__)

HEAD_PREFIX = "head."


def _load_file(path: Path) -> Mapping:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ConfigError(
            f"task.backbone: cannot read '{path}' ({err}); give a jettag .ckpt or a weaver-core ParT .pt file."
        ) from None


def backbone_state(source: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """The backbone tensors of a jettag checkpoint as {ParT key: tensor} (no head), and the file kind.

    Returns ({}, "weaver") for a file that is not a jettag checkpoint: those go through
    `load_weaver_weights`.
    """
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"task.backbone: the file '{path}' does not exist; check the path.")
    content = _load_file(path)
    if isinstance(content, Mapping) and "jettag" in content and "state_dict" in content:
        prefix = "model."
        state = {
            k[len(prefix) :]: v
            for k, v in content["state_dict"].items()
            if k.startswith(prefix) and not k[len(prefix) :].startswith(HEAD_PREFIX)
        }
        if not state:
            raise ConfigError(f"task.backbone: '{path}' holds no model tensors; is it a jettag checkpoint?")
        return state, "jettag"
    return {}, "weaver"


def load_backbone(model: nn.Module, source: str | Path) -> list[str]:
    """Load every tensor but the head from `source` into `model`; returns the keys loaded.

    Each tensor must exist in the model with the same shape: a mismatch (another feature set, width or
    depth) stops with a `ConfigError` naming the file and the tensor.
    """
    from jettag.models.part import ParticleTransformer
    from jettag.models.weaver import load_weaver_weights

    if not isinstance(model, ParticleTransformer):
        raise ConfigError(
            f"task=finetune needs model=part or part_small (a ParticleTransformer), not {type(model).__name__}."
        )
    state, kind = backbone_state(source)
    if kind == "weaver":
        load_weaver_weights(model, source, keep_head=False)
        return [k for k in model.state_dict() if not k.startswith(HEAD_PREFIX)]
    target = model.state_dict()
    for key, tensor in state.items():
        if key not in target:
            raise ConfigError(
                f"task.backbone: '{source}' has the tensor '{key}' that this model lacks; build the model "
                "with the model config the backbone was trained with."
            )
        if target[key].shape != tensor.shape:
            raise ConfigError(
                f"task.backbone: '{source}' has '{key}' of shape {tuple(tensor.shape)} where the model needs "
                f"{tuple(target[key].shape)}; use the backbone's model and features configs."
            )
    missing = [k for k in target if not k.startswith(HEAD_PREFIX) and k not in state]
    if missing:
        raise ConfigError(
            f"task.backbone: '{source}' lacks the tensor '{missing[0]}'; build the model with the model "
            "config the backbone was trained with."
        )
    model.load_state_dict(state, strict=False)
    return list(state)


def layer_depths(model: nn.Module) -> dict[str, int]:
    """Depth of each backbone parameter: 0 for the embeddings, i + 1 for particle block i, then the
    class token and class blocks, the final norm deepest."""
    num_blocks = len(model.blocks)
    num_cls = len(model.cls_blocks)
    depths = {}
    for name, _ in model.named_parameters():
        top, *rest = name.split(".")
        if top in ("embed", "pair_embed"):
            depths[name] = 0
        elif top == "blocks":
            depths[name] = int(rest[0]) + 1
        elif top == "cls_token":
            depths[name] = num_blocks + 1
        elif top == "cls_blocks":
            depths[name] = num_blocks + 1 + int(rest[0])
        elif top == "norm":
            depths[name] = num_blocks + num_cls + 1
    return depths


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
    ):
        super().__init__(model, optimizer, scheduler, class_names, background, label_smoothing)
        if not 0 < layer_decay <= 1:
            raise ConfigError(f"task.layer_decay={layer_decay} must lie in (0, 1]; 1 turns the decay off.")
        if head_lr_factor <= 0:
            raise ConfigError(f"task.head_lr_factor={head_lr_factor} must be positive.")
        self.head_lr_factor = float(head_lr_factor)
        self.freeze_backbone = bool(freeze_backbone)
        self.layer_decay = float(layer_decay)
        self.head_lr_modules = tuple(str(m) for m in head_lr_modules)
        known = {name.split(".")[0] for name, _ in model.named_parameters()}
        unknown = [m for m in self.head_lr_modules if m not in known]
        if unknown:
            raise ConfigError(
                f"task.head_lr_modules: the model has no module '{unknown[0]}'; choose from {', '.join(sorted(known))}."
            )
        if not backbone:
            raise ConfigError(
                "task.backbone is not set; give the pretrained model, e.g. task.backbone=runs/pre/checkpoints/"
                "last.ckpt (a jettag checkpoint) or task.backbone=ParT_kin.pt (weaver-core weights)."
            )
        loaded = load_backbone(model, backbone)
        log.info("backbone: %d tensors loaded from %s", len(loaded), backbone)
        model.reset_head(len(self.class_names) or model.num_classes)  # the new classes' head
        if self.freeze_backbone:
            for name, param in model.named_parameters():
                param.requires_grad_(name.startswith(HEAD_PREFIX))

    def _probe_mode(self) -> None:
        # a linear probe: no dropout, no batch-norm statistics updates in the backbone
        if self.freeze_backbone and self.training:
            self.model.eval()
            self.model.head.train()

    def train(self, mode: bool = True):
        super().train(mode)
        self._probe_mode()
        return self

    def on_train_batch_start(self, batch, batch_idx) -> None:
        self._probe_mode()  # Lightning may switch submodules back to train mode (e.g. after validation)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.freeze_backbone:
            with torch.no_grad():
                features = self.model.forward_features(batch["x"], batch["v"], batch["mask"])
            return self.model.forward_head(features)
        return super().forward(batch)

    def parameter_groups(self) -> list[dict]:
        """Optimizer groups: (lr scale, weight decay or not) per backbone depth, and the head's."""
        base_lr = getattr(self.optimizer_factory, "keywords", {}).get("lr", 1e-3)
        depths = layer_depths(self.model)
        top = max(depths.values(), default=0)
        groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            if name.split(".")[0] in self.head_lr_modules:
                scale = self.head_lr_factor
            else:
                scale = self.layer_decay ** (top - depths[name])
            no_decay = param.ndim < 2 or name.split(".")[-1] in NO_WEIGHT_DECAY
            groups.setdefault((scale, no_decay), []).append(param)
        return [
            {"params": params, "lr": base_lr * scale, **({"weight_decay": 0.0} if no_decay else {})}
            for (scale, no_decay), params in sorted(groups.items(), key=lambda item: item[0])
        ]

    def configure_optimizers(self):
        return with_scheduler(self, self.optimizer_factory(self.parameter_groups()))
