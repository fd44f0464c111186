"""Masked particle modelling as published (MPMv2: Leigh et al., arXiv:2409.12589), optionally with
classification in the same run.

In each jet a random fraction `mask_fraction` (0.4) of the real particles is masked, and the masked
particles are **removed** from the encoder's input (as a masked autoencoder does): the encoder, a
ParticleTransformer, sees only the visible particles, whose input features are recomputed from their
four-momenta with the loader's definitions relative to the jet *of the visible particles*
(`jettag.features.recompute`), so no input (batch norms, attention, pair features, `part_logptrel`)
depends on the masked particles. A separate transformer decoder receives the encoder's particle
tokens, its pooled jet representation (`forward_features`: the class-attention blocks are trained
too), and for each masked particle a learned placeholder; every decoder token is told the pT rank
of its particle in the whole jet (a learned embedding: the only thing the decoder knows about which
particle to predict). At the placeholders the decoder predicts the masked particle's

- continuous inputs (the standardized kinematic features as the loader computed them for the whole
  jet, and any continuous attribute such as impact parameters), with an L1 loss; and
- identity, where charge or PID columns are inputs: a cross-entropy over the classes photon,
  neutral hadron, charged hadron +/-, electron +/-, muon +/- (or the charge sign when only the charge is
  an input), weighted by `id_weight` (0.3).

`classification_weight` > 0 adds the cross-entropy of the model's own classifier on the whole,
unmasked jet (labels needed): classification plus MPM in one run. The checkpoint holds the whole
ParticleTransformer (`model.*`); the decoder is dropped after pretraining.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from jettag.data.batch import JetBatch
from jettag.data.datamodule import UNLABELLED
from jettag.errors import ConfigError
from jettag.features.sets import FeatureSet
from jettag.tasks.pretraining import PretrainingTask, eval_generator

log = logging.getLogger(__name__)

PID_FLAGS = (
    "part_isPhoton",
    "part_isNeutralHadron",
    "part_isChargedHadron",
    "part_isElectron",
    "part_isMuon",
)
IDENTITY = ("part_charge", *PID_FLAGS)
# photon, neutral hadron, then (charged hadron, electron, muon) x (+, -)
ID_CLASSES = ("photon", "neutral hadron", "h+", "h-", "e+", "e-", "mu+", "mu-")
CHARGE_CLASSES = ("-", "0", "+")


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
    """Boolean (B, N): each real particle masked with probability `fraction`; every jet of two or more
    particles keeps at least one visible particle and has at least one masked."""
    draw = torch.rand(mask.shape, generator=generator, device="cpu").to(mask.device)
    masked = (draw < fraction) & mask
    several = mask.sum(1) > 1
    ranked = draw.masked_fill(~mask, 2.0)
    # jets where nothing was drawn: mask the particle of lowest draw
    empty = ~masked.any(1) & several
    if empty.any():
        masked[empty, ranked.argmin(1)[empty]] = True
    # jets where everything was drawn (or a one-particle jet): keep the particle of highest draw visible
    full = ~(mask & ~masked).any(1) & mask.any(1)
    if full.any():
        keep = draw.masked_fill(~mask, -1.0).argmax(1)
        masked[full, keep[full]] = False
    return masked


def compact(mask: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The particles of `mask` moved to the front of each jet in their order, padded to the longest:
    (new mask, *tensors gathered), each cut to the longest jet."""
    order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices
    length = int(mask.sum(1).max())
    new_mask = torch.gather(mask, 1, order)[:, :length]
    gathered = [torch.gather(t, 1, order[..., None].expand_as(t))[:, :length] for t in tensors]
    zero = torch.zeros((), dtype=tensors[0].dtype, device=mask.device)
    return new_mask, *(torch.where(new_mask[..., None], g, zero) for g in gathered)


def identity_targets(
    names: Sequence[str], raw: Callable[[str], torch.Tensor | None]
) -> tuple[tuple, Callable | None]:
    """(class names, function of x -> class index per particle), or ((), None) without identity inputs."""
    flags = [n for n in PID_FLAGS if n in names]
    if len(flags) == len(PID_FLAGS):

        def classes(x: torch.Tensor) -> torch.Tensor:
            flag = {n: raw(x, n) > 0.5 for n in PID_FLAGS}
            charge = raw(x, "part_charge")
            negative = (charge < 0) if charge is not None else torch.zeros_like(flag["part_isPhoton"])
            index = torch.zeros(x.shape[:-1], dtype=torch.long, device=x.device)  # photon
            index = torch.where(flag["part_isNeutralHadron"], 1, index)
            for k, name in enumerate(("part_isChargedHadron", "part_isElectron", "part_isMuon")):
                index = torch.where(flag[name], 2 + 2 * k + negative.long(), index)
            return index

        return ID_CLASSES, classes
    if "part_charge" in names:
        return CHARGE_CLASSES, lambda x: (torch.sign(torch.round(raw(x, "part_charge"))) + 1).long()
    return (), None


class MaskedParticlePretrainer(PretrainingTask):
    """MPMv2 on a ParticleTransformer backbone, with optional classification (see the module docstring)."""

    objective = "masked particle modelling (MPMv2)"

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable | None = None,
        features: FeatureSet | None = None,
        mask_fraction: float = 0.4,
        id_weight: float = 0.3,
        classification_weight: float = 0.0,
        decoder_dim: int = 64,
        decoder_layers: int = 2,
        decoder_heads: int = 4,
        class_names: Sequence[str] = (),
        background: int = 0,
    ):
        if not hasattr(model, "forward_tokens"):
            raise ConfigError(
                "task=pretrain (masked particle modelling) needs a ParticleTransformer (model=part, part_small or "
                f"part_plain), not {type(model).__name__}; task=contrastive pretrains any model."
            )
        super().__init__(model, optimizer, scheduler, features, class_names, background)
        if not 0 < mask_fraction < 1:
            raise ConfigError(f"task.mask_fraction={mask_fraction} must lie strictly between 0 and 1.")
        if id_weight < 0 or classification_weight < 0:
            raise ConfigError("task.id_weight and task.classification_weight must not be negative.")
        if decoder_dim % decoder_heads:
            raise ConfigError(
                f"task.decoder_dim={decoder_dim} must be divisible by task.decoder_heads={decoder_heads}."
            )
        names = self.recompute.names
        self.mask_fraction = float(mask_fraction)
        self.id_weight = float(id_weight)
        self.classification_weight = float(classification_weight)
        self.id_classes, self.identity = identity_targets(names, self.recompute.raw)
        continuous = [i for i, n in enumerate(names) if n not in IDENTITY]
        if not continuous:
            raise ConfigError("masked particle modelling needs at least one continuous input feature.")
        self.target_names = [names[i] for i in continuous]
        self.register_buffer("continuous", torch.tensor(continuous, dtype=torch.long), persistent=False)
        max_particles = self.recompute.features.max_particles
        self.max_rank = max_particles
        self.encoder_to_decoder = nn.Linear(model.embed_dim, decoder_dim)
        self.jet_to_decoder = nn.Linear(model.dim, decoder_dim)
        self.placeholder = nn.Parameter(torch.zeros(decoder_dim))
        # pT rank in the whole jet; the last row marks the jet token
        self.rank = nn.Embedding(max_particles + 1, decoder_dim)
        nn.init.trunc_normal_(self.placeholder, std=0.02)
        layer = nn.TransformerEncoderLayer(decoder_dim, decoder_heads, 2 * decoder_dim, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)  # fmt: skip
        self.decoder = nn.TransformerEncoder(layer, decoder_layers, enable_nested_tensor=False)
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.predict_continuous = nn.Linear(decoder_dim, len(continuous))
        self.predict_identity = nn.Linear(decoder_dim, len(self.id_classes)) if self.id_classes else None
        if self.classification_weight > 0 and self.class_names in ([], [UNLABELLED]):
            raise ConfigError(
                "task.classification_weight > 0 needs labels: list the label branches in data.labels."
            )

    def encoder_inputs(self, x, v, mask, masked):
        """The encoder's input: the visible particles only, features recomputed among them."""
        visible, x_vis, v_vis = compact(mask & ~masked, x, v)
        return self.recompute(x_vis, v_vis, visible), v_vis, visible

    def losses(self, batch: JetBatch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        x, v, mask = batch.inputs
        mask = mask.bool()
        masked = mask_particles(mask, self.mask_fraction, generator)
        x_vis, v_vis, visible = self.encoder_inputs(x, v, mask, masked)
        tokens, jet = self.model.forward_tokens(x_vis, v_vis, visible, features=True)

        # decoder sequence: the jet token, then every particle slot of the whole jet in pT order
        batch_size, n = mask.shape
        rank = torch.arange(n, device=x.device).clamp_max(self.max_rank - 1)
        seq = self.placeholder.expand(batch_size, n, -1).clone()
        # the same particle order; in the placeholders' dtype (autocast gives the Linear's output in bf16)
        seq[mask & ~masked] = self.encoder_to_decoder(tokens[visible]).to(seq.dtype)
        seq = seq + self.rank(rank)
        jet_token = self.jet_to_decoder(jet) + self.rank.weight[self.max_rank]
        seq = torch.cat([jet_token[:, None], seq], 1)
        keys = torch.cat([torch.ones_like(mask[:, :1]), mask], 1)
        out = self.decoder_norm(self.decoder(seq, src_key_padding_mask=~keys))[:, 1:][masked]  # (M, D)

        # means over the masked particles, 0 (not NaN) for a batch without any (one-particle jets only)
        prediction = self.predict_continuous(out)
        target = x[masked][:, self.continuous]
        losses = {"continuous": F.l1_loss(prediction, target, reduction="sum") / max(prediction.numel(), 1)}
        if self.identity is not None:
            classes = self.identity(x[masked])
            losses["identity"] = F.cross_entropy(self.predict_identity(out), classes, reduction="sum") / max(
                len(classes), 1
            )
        if self.classification_weight > 0:
            losses["classification"] = F.cross_entropy(self.model(x, v, mask), batch.y)
        losses["loss"] = (
            losses["continuous"]
            + self.id_weight * losses.get("identity", 0.0)
            + self.classification_weight * losses.get("classification", 0.0)
        )
        return losses

    def training_step(self, batch, batch_idx):
        losses = self.losses(batch)
        for name, value in losses.items():
            self.log(f"train/{name}", value, prog_bar=name == "loss", batch_size=len(batch))
        return losses["loss"]

    def _eval_step(self, batch, batch_idx, stage: str):
        losses = self.losses(batch, eval_generator(batch_idx))
        for name, value in losses.items():
            self.log(f"{stage}/{name}", value, prog_bar=name == "loss", batch_size=len(batch), sync_dist=True)

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, batch_idx, "test")

    def trained_parameters(self):
        if self.classification_weight > 0:  # the classifier head trains too
            return iter(self.named_parameters())
        return super().trained_parameters()

    def record_extra(self) -> dict:
        return {
            "objective": self.objective + (" + classification" if self.classification_weight > 0 else ""),
            "targets": self.target_names,
            "identity_classes": list(self.id_classes),
        }
