"""Self-supervised pretraining of the ParT backbone: masked particle modelling (MPM).

In each jet a random fraction `mask_fraction` of the real particles is masked. A masked particle
keeps only its position in the eta-phi plane: its input features other than `visible_features`
(by default deta, dphi, deltaR) are replaced by a learned mask vector, and its four-momentum, which
feeds the pairwise interaction features, by a massless one of fixed pT `masked_pt` (GeV) in the same
direction, so neither its momentum nor its identity leaks through the interaction bias. The backbone
(particle embedding, pair embedding, particle-attention blocks) turns the jet into one embedding per
particle (`ParticleTransformer.forward_tokens`), and a small decoder predicts, at each masked
particle, its hidden standardized features (log pT, log E, their ratios to the jet, charge, PID
flags, ...). The loss (`mse` or `smooth_l1`) is averaged over the masked particles and the predicted
features. No labels are used.

The checkpoint holds the whole ParticleTransformer (`model.*`), so `task=finetune
task.backbone=<run>/checkpoints/last.ckpt` starts from it; the class-attention blocks and the class
token are not trained by this objective and start fine-tuning from their initial values.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from jettag.checkpoint import RunRecord
from jettag.data.batch import JetBatch
from jettag.errors import ConfigError
from jettag.tasks.classification import decay_groups, with_scheduler

log = logging.getLogger(__name__)

LOSSES = ("mse", "smooth_l1")


def feature_name(entry) -> str:
    """The name of one `particle_features` entry of a feature config (`name` or `[name, ...]`)."""
    if isinstance(entry, str):
        return entry
    if isinstance(entry, Mapping):
        return str(entry.get("name"))
    return str(next(iter(entry)))


def mask_particles(
    mask: torch.Tensor, fraction: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Boolean (B, N): each real particle masked with probability `fraction`, at least one per jet."""
    draw = torch.rand(mask.shape, generator=generator, device="cpu").to(mask.device)
    masked = (draw < fraction) & mask
    # jets where nothing was drawn: mask their particle with the lowest draw
    empty = ~masked.any(1) & mask.any(1)
    if empty.any():
        lowest = draw.masked_fill(~mask, 2.0).argmin(1)
        masked[empty, lowest[empty]] = True
    return masked


def direction_only(v: torch.Tensor, pt: float) -> torch.Tensor:
    """(..., 4) px py pz E -> massless four-vectors of transverse momentum `pt` along the same direction."""
    p = v[..., :3]
    pt_now = torch.hypot(p[..., 0], p[..., 1]).clamp_min(1e-9)[..., None]
    unit = p / pt_now  # (px, py, pz) / pT
    energy = torch.linalg.vector_norm(unit, dim=-1, keepdim=True)
    return torch.cat([unit, energy], dim=-1) * pt


class MaskedParticlePretrainer(L.LightningModule):
    """Masked particle modelling on a ParticleTransformer backbone (see the module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        feature_names: Sequence,
        scheduler: Callable | None = None,
        visible_features: Sequence[str] = ("part_deta", "part_dphi", "part_deltaR"),
        mask_fraction: float = 0.3,
        masked_pt: float = 1.0,
        loss: str = "mse",
        decoder_width: int = 128,
        class_names: Sequence[str] = (),
        background: int = 0,
    ):
        super().__init__()
        if not hasattr(model, "forward_tokens"):
            raise ConfigError(
                f"task=pretrain needs model=part or part_small (a ParticleTransformer), not {type(model).__name__}."
            )
        names = [feature_name(e) for e in feature_names]
        unknown = [n for n in visible_features if n not in names]
        if unknown:
            raise ConfigError(
                f"task.visible_features: {unknown[0]} is not one of the input features ({', '.join(names)})."
            )
        if not 0 < mask_fraction < 1:
            raise ConfigError(f"task.mask_fraction={mask_fraction} must lie strictly between 0 and 1.")
        if loss not in LOSSES:
            raise ConfigError(f"task.loss={loss!r} is not known; choose one of {', '.join(LOSSES)}.")
        hidden = [i for i, n in enumerate(names) if n not in visible_features]
        if not hidden:
            raise ConfigError("task.visible_features lists every input feature: nothing is left to predict.")
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.feature_names = names
        self.target_names = [names[i] for i in hidden]
        self.mask_fraction = float(mask_fraction)
        self.masked_pt = float(masked_pt)
        self.loss_name = loss
        self.class_names = list(class_names)  # kept in the checkpoint; not used for training
        self.background = background
        self.run_config: dict | None = None
        self.register_buffer("hidden", torch.tensor(hidden, dtype=torch.long), persistent=False)
        self.mask_value = nn.Parameter(torch.zeros(len(names)))
        dim = model.embed_dim  # of the tokens
        self.decoder = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, decoder_width), nn.GELU(), nn.Linear(decoder_width, len(hidden))
        )

    def masked_inputs(
        self, x: torch.Tensor, v: torch.Tensor, masked: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The inputs with the masked particles' hidden features and momenta replaced."""
        hide = torch.zeros(x.shape[-1], dtype=torch.bool, device=x.device)
        hide[self.hidden] = True
        replace = masked[..., None] & hide  # (B, N, C)
        x_in = torch.where(replace, self.mask_value.to(x.dtype).expand_as(x), x)
        v_in = torch.where(masked[..., None], direction_only(v, self.masked_pt), v)
        return x_in, v_in

    def loss(self, batch: JetBatch, generator: torch.Generator | None = None) -> torch.Tensor:
        x, v, mask = batch.inputs
        masked = mask_particles(mask, self.mask_fraction, generator)
        x_in, v_in = self.masked_inputs(x, v, masked)
        tokens = self.model.forward_tokens(x_in, v_in, mask)  # (B, N, D)
        prediction = self.decoder(tokens[masked])  # (M, targets)
        target = x[masked][:, self.hidden]
        if self.loss_name == "mse":
            return F.mse_loss(prediction, target)
        return F.smooth_l1_loss(prediction, target)

    def training_step(self, batch, batch_idx):
        loss = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def _eval_step(self, batch, batch_idx, stage: str):
        # the same masks in every evaluation: the validation loss is comparable from epoch to epoch
        generator = torch.Generator().manual_seed(1000 + batch_idx)
        loss = self.loss(batch, generator)
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=len(batch))

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, batch_idx, "test")

    def configure_optimizers(self):
        # the classifier head is not trained here (a fine-tuning run replaces it)
        trained = ((n, p) for n, p in self.named_parameters() if not n.startswith("model.head."))
        return with_scheduler(self, self.optimizer_factory(decay_groups(trained)))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        extra = {"objective": "masked particle modelling", "targets": self.target_names}
        RunRecord(self.run_config, self.class_names, self.background, extra).write(checkpoint)
