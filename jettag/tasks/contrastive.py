"""Contrastive self-supervised pretraining with jet symmetries (JetCLR, Dillon et al., arXiv:2108.04253).

Each jet of a batch is turned into two views by augmentations that a tagger should not care about
(`jettag.features.augment`: rotation about the jet's pT centroid, a boost along the beam with a
rotation about it, soft smearing, collinear splitting), with the input features recomputed from the
augmented four-momenta. The model's backbone (`forward_features`, so every jettag model can be
pretrained) maps each view to a representation h, a projection head (two layers) maps h to z, and the
NT-Xent loss pulls the two views of a jet together and pushes the other 2B - 2 views of the batch
away: for view i with partner j, -log( exp(cos(z_i, z_j) / T) / sum_{k != i} exp(cos(z_i, z_k) / T) ).
The projection head is dropped after pretraining; fine-tuning starts from the backbone. No labels
are used. `val/top1` is the fraction of views whose nearest other view (cosine) is their partner.
Under DDP each process contrasts the views of its own batch (`data.batch_size` jets, 2 x batch - 2
negatives per view), as JetCLR's single-GPU recipe does; views are not gathered across processes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from jettag.data.batch import JetBatch
from jettag.errors import ConfigError
from jettag.features.augment import Augmenter, Particles
from jettag.features.sets import FeatureSet
from jettag.tasks.pretraining import PretrainingTask, eval_generator

JETCLR_VIEWS = (("rotate", "translate"), ("rotate", "translate", "smear", "split"))


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """NT-Xent loss of two batches of projections (B, K), and the top-1 retrieval accuracy."""
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    n = len(z1)
    similarity = z @ z.T / temperature
    similarity.fill_diagonal_(float("-inf"))  # a view is not its own partner
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    loss = F.cross_entropy(similarity, partner)
    top1 = (similarity.argmax(1) == partner).float().mean()
    return loss, top1


def stack_views(views: Sequence[Particles]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The views one after the other in one padded batch (they may differ in length: splitting)."""
    n = max(p.mask.shape[1] for p in views)

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, 0, 0, n - t.shape[1])) if t.ndim == 3 else F.pad(t, (0, n - t.shape[1]))

    return tuple(torch.cat([pad(getattr(p, name)) for p in views]) for name in ("x", "v", "mask"))


class ContrastivePretrainer(PretrainingTask):
    """JetCLR-style pretraining of any jettag model's backbone (see the module docstring)."""

    objective = "contrastive (NT-Xent)"

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable | None = None,
        features: FeatureSet | None = None,
        temperature: float = 0.1,
        projection_dims: Sequence[int] = (256, 128),
        views: Sequence[Sequence[str]] = JETCLR_VIEWS,
        augmentations: Mapping[str, Mapping] | None = None,
        class_names: Sequence[str] = (),
        background: int = 0,
    ):
        super().__init__(model, optimizer, scheduler, features, class_names, background)
        if temperature <= 0:
            raise ConfigError(f"task.temperature={temperature} must be positive.")
        if len(views) != 2:
            raise ConfigError(f"task.views lists {len(views)} views; contrastive pretraining takes two.")
        if len(projection_dims) < 1 or any(int(d) < 1 for d in projection_dims):
            raise ConfigError(f"task.projection_dims={list(projection_dims)} must be positive widths.")
        self.temperature = float(temperature)
        self.augment = Augmenter(self.recompute, views, augmentations)
        layers, width = [], model.dim
        for i, out in enumerate(projection_dims):
            layers.append(nn.Linear(width, int(out)))
            if i < len(projection_dims) - 1:
                layers.append(nn.ReLU())
            width = int(out)
        self.projection = nn.Sequential(*layers)

    def loss(self, batch: JetBatch, generator: torch.Generator | None = None):
        views = self.augment(*batch.inputs, generator=generator)
        x, v, mask = stack_views(views)
        h = self.model.forward_features(x, v, mask)  # both views in one pass (shared batch statistics)
        z1, z2 = self.projection(h).chunk(2)
        return nt_xent(z1, z2, self.temperature)

    def training_step(self, batch, batch_idx):
        loss, top1 = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        self.log("train/top1", top1, batch_size=len(batch))
        return loss

    def _eval_step(self, batch, batch_idx, stage: str):
        loss, top1 = self.loss(batch, eval_generator(batch_idx))
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=len(batch), sync_dist=True)
        self.log(f"{stage}/top1", top1, prog_bar=True, batch_size=len(batch), sync_dist=True)

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, batch_idx, "test")

    def record_extra(self) -> dict:
        return {"objective": self.objective, "temperature": self.temperature, "views": self.augment.views}
