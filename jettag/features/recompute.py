"""Particle features recomputed in torch from (changed) four-momenta, by the loader's definitions.

Pretraining changes jets inside the training step: augmentations move, boost, smear and split
particles (`jettag.features.augment`), masked particle modelling drops particles. The model's input
features must then be those the loader would have computed for the changed jet. `FeatureRecomputer`
does that on a padded batch, on any device: every kinematic variable of `jettag.features.variables`
(`part_pt`, `part_eta`, `part_phi`, `part_pt_log`, `part_e_log`, `part_logptrel`, `part_logerel`,
`part_deta`, `part_dphi`, `part_deltaR`) is computed from the four-momenta `v` with the same formulas
and conventions (`jettag.features.kinematics`: the jet axis is the four-vector sum of the jet's
particles, `part_deta` signed by the jet's eta, `part_dphi` wrapped into [-pi, pi)), in float64, and
standardized as the feature set says. Every other column (charge, PID flags, impact parameters, a
user's own branches) is an attribute of its particle: it is taken from `x` as it is and travels with
the particle. Padded slots are zero, as the loader pads.

The jet axis is that of the particles in the batch. For the loader it is the sum over all of a jet's
particles (or the file's `jet_*` branches): the two agree when no particle was cut by
`features.max_particles`, as in the tests, which compare the two to 1e-5.
"""

from __future__ import annotations

import math

import torch

from jettag.errors import ConfigError
from jettag.features.sets import FeatureSet

KINEMATIC = (
    "part_pt",
    "part_eta",
    "part_phi",
    "part_pt_log",
    "part_e_log",
    "part_logptrel",
    "part_logerel",
    "part_deta",
    "part_dphi",
    "part_deltaR",
)


def wrap_phi(phi: torch.Tensor) -> torch.Tensor:
    """Into [-pi, pi), as `relative_coordinates` wraps (the one torch home of the convention)."""
    return torch.remainder(phi + math.pi, 2 * math.pi) - math.pi


def kinematics(v: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every `KINEMATIC` variable, (B, N) float64 each, from four-momenta (B, N, 4) (px, py, pz, E).

    The jet axis sums the particles of `mask`; values at padded slots are meaningless (not NaN-free).
    """
    p = v.double() * mask[..., None]
    px, py, pz, energy = p.unbind(-1)
    jet = p.sum(1)  # (B, 4)
    jet_pt = torch.hypot(jet[:, 0], jet[:, 1])
    jet_eta = torch.asinh(jet[:, 2] / jet_pt)
    jet_phi = torch.atan2(jet[:, 1], jet[:, 0])
    pt = torch.hypot(px, py)
    eta = torch.asinh(pz / pt)
    phi = torch.atan2(py, px)
    sign = torch.where(jet_eta >= 0, 1.0, -1.0).to(p.dtype)[:, None]
    deta = (eta - jet_eta[:, None]) * sign
    dphi = wrap_phi(phi - jet_phi[:, None])
    return {
        "part_pt": pt,
        "part_eta": eta,
        "part_phi": phi,
        "part_pt_log": torch.log(pt),
        "part_e_log": torch.log(energy),
        "part_logptrel": torch.log(pt / jet_pt[:, None]),
        "part_logerel": torch.log(energy / jet[:, 3:4]),
        "part_deta": deta,
        "part_dphi": dphi,
        "part_deltaR": torch.hypot(deta, dphi),
    }


class FeatureRecomputer:
    """The standardized input features of changed jets (see the module docstring).

    `features` is the run's feature set with fitted numbers (`JetDataModule.features`): its
    standardization of each kinematic column is applied here as the loader applies it.
    """

    def __init__(self, features: FeatureSet):
        if features.needs_fit:
            raise ConfigError(
                "features: some features are standardized 'auto' and not fitted yet; pretraining recomputes "
                "features and needs the fitted numbers (fit them on data.train_files first)."
            )
        self.features = features
        self.names = features.names
        self.kinematic = [i for i, name in enumerate(self.names) if name in KINEMATIC]
        self.attributes = [i for i, name in enumerate(self.names) if name not in KINEMATIC]

    def column(self, name: str) -> int | None:
        return self.names.index(name) if name in self.names else None

    def __call__(self, x: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, N, C) whose attribute columns belong to the particles of v (B, N, 4), mask (B, N) ->
        the features (B, N, C) of those particles, the kinematic ones computed from v."""
        if not self.kinematic:
            return x * mask[..., None]
        values = kinematics(v, mask)
        columns = []
        for i, feature in enumerate(self.features.features):
            if i in self.attributes:
                columns.append(x[..., i].double())
                continue
            raw = values[feature.name]
            if feature.center is not None:
                raw = torch.clamp((raw - feature.center) * feature.scale, feature.lo, feature.hi)
            columns.append(raw)
        out = torch.stack(columns, -1)
        out = torch.where(mask[..., None], out, torch.zeros((), dtype=out.dtype, device=out.device))
        return out.to(x.dtype)

    def raw(self, x: torch.Tensor, name: str) -> torch.Tensor | None:
        """Column `name` of standardized `x` back in its own units (exact where it was not clipped)."""
        i = self.column(name)
        if i is None:
            return None
        feature = self.features.features[i]
        if feature.center is None:
            return x[..., i]
        return x[..., i] / feature.scale + feature.center
