"""Jet augmentations for contrastive pretraining: symmetries of jets, acting on the four-momenta.

Each augmentation takes a padded batch of `Particles` (standardized features `x`, four-momenta `v`
as (px, py, pz, E), `mask`) and returns the changed particles; the math is done in float64 and `v`
keeps its dtype. Only four-momenta change: a particle's other attributes (the non-kinematic columns
of `x`: charge, PID flags, impact parameters) travel with it, and the kinematic input features are
recomputed afterwards from the new four-momenta with the loader's definitions
(`jettag.features.recompute.FeatureRecomputer`; `Augmenter` does both). Rapidity y is
0.5 ln((E + pz) / (E - pz)); the transverse mass mT = sqrt(E^2 - pz^2) = sqrt(pT^2 + m^2).

What each conserves exactly (REFERENCE.md section 8; tested with `vector`):

- `rotate`: a rotation by a uniform angle in the (y, phi) plane about the jet's pT-weighted centroid
  keeps every particle's pT and mass and every pairwise distance in (y, phi);
- `translate`: a boost along the beam by a uniform rapidity shift in [-max_shift, max_shift] keeps
  every pT, phi, mass and pair mass and shifts every rapidity by the same amount; with
  `beam_rotation`, a rotation about the beam by a uniform angle keeps every pT, rapidity and energy;
- `smear`: soft smearing (JetCLR): each particle's y and phi move by N(0, scale / max(pT, pt_floor))
  with pT in GeV, so soft particles move and hard ones do not; keeps every pT and mass;
- `split`: collinear splitting (JetCLR): each particle, with probability `fraction`, becomes two with
  momentum fractions r and 1 - r (r uniform) in the same direction; keeps the jet four-momentum. With
  `neutral_only` (the default `auto`: when a charge or PID column is an input) only neutral particles
  split, so charge and identity stay those of real particles (`true` without such a column is an
  error: the charges are unknown). The two halves carry the original's attributes; the jet is then
  re-sorted by pT, as the loader sorts it; a split that would exceed `max_particles` is not made.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from jettag.errors import ConfigError
from jettag.features.recompute import FeatureRecomputer, wrap_phi

IDENTITY_COLUMNS = (
    "part_charge",
    "part_isChargedHadron",
    "part_isNeutralHadron",
    "part_isPhoton",
    "part_isElectron",
    "part_isMuon",
)


@dataclass
class Particles:
    """A padded batch: x (B, N, C) features, v (B, N, 4) four-momenta, mask (B, N) bool."""

    x: torch.Tensor
    v: torch.Tensor
    mask: torch.Tensor


def _uniform(shape, lo: float, hi: float, like: torch.Tensor, generator) -> torch.Tensor:
    draw = torch.rand(shape, generator=generator, dtype=torch.float64, device=_device(generator, like))
    return (lo + (hi - lo) * draw).to(like.device)


def _normal(shape, like: torch.Tensor, generator) -> torch.Tensor:
    draw = torch.randn(shape, generator=generator, dtype=torch.float64, device=_device(generator, like))
    return draw.to(like.device)


def _device(generator: torch.Generator | None, like: torch.Tensor) -> torch.device:
    return generator.device if generator is not None else like.device


def cylindrical(v: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(pT, y, phi, mT) in float64 of four-momenta (B, N, 4); zero at padded slots."""
    px, py, pz, energy = v.double().unbind(-1)
    pt = torch.hypot(px, py)
    mt = torch.sqrt(torch.clamp(energy * energy - pz * pz, min=0.0))
    y = torch.where(mask, 0.5 * torch.log((energy + pz) / (energy - pz)), 0.0)
    return pt, y, torch.atan2(py, px), mt


def cartesian(pt, y, phi, mt, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Four-momenta (..., 4) from pT, y, phi, mT; zero at padded slots."""
    v = torch.stack([pt * torch.cos(phi), pt * torch.sin(phi), mt * torch.sinh(y), mt * torch.cosh(y)], -1)
    v = torch.where(mask[..., None], v, torch.zeros((), dtype=v.dtype, device=v.device))
    return v.to(dtype)


def _rebuilt(p: Particles, pt, y, phi, mt) -> Particles:
    return Particles(p.x, cartesian(pt, y, phi, mt, p.mask, p.v.dtype), p.mask)


class Rotate:
    """Rotation by a uniform angle in the (y, phi) plane about the jet's pT centroid."""

    def __call__(self, p: Particles, generator=None) -> Particles:
        pt, y, phi, mt = cylindrical(p.v, p.mask)
        real = p.mask.double()
        w = pt * real
        total = w.sum(1, keepdim=True).clamp_min(1e-30)
        # phi relative to the pT-weighted mean direction, so a jet across phi = +-pi stays whole
        axis = torch.atan2(
            (w * torch.sin(phi)).sum(1, keepdim=True), (w * torch.cos(phi)).sum(1, keepdim=True)
        )
        rel = wrap_phi(phi - axis)
        cy, cphi = (w * y).sum(1, keepdim=True) / total, (w * rel).sum(1, keepdim=True) / total
        angle = _uniform((len(pt), 1), 0.0, 2 * math.pi, pt, generator)
        cos, sin = torch.cos(angle), torch.sin(angle)
        dy, dphi = y - cy, rel - cphi
        y_new = cy + cos * dy - sin * dphi
        phi_new = axis + cphi + sin * dy + cos * dphi
        return _rebuilt(p, pt, y_new, phi_new, mt)


class Translate:
    """A boost along the beam (uniform rapidity shift) and, with `beam_rotation`, a rotation about it."""

    def __init__(self, max_shift: float = 1.0, beam_rotation: bool = True):
        if max_shift < 0:
            raise ConfigError(f"task.augmentations.translate.max_shift={max_shift} must not be negative.")
        self.max_shift = float(max_shift)
        self.beam_rotation = bool(beam_rotation)

    def __call__(self, p: Particles, generator=None) -> Particles:
        pt, y, phi, mt = cylindrical(p.v, p.mask)
        shift = _uniform((len(pt), 1), -self.max_shift, self.max_shift, pt, generator)
        turn = (
            _uniform((len(pt), 1), -math.pi, math.pi, pt, generator)
            if self.beam_rotation
            else torch.zeros_like(shift)
        )
        return _rebuilt(p, pt, y + shift, phi + turn, mt)


class Smear:
    """Soft smearing: y and phi move by N(0, scale / max(pT / GeV, pt_floor)); pT and mass kept."""

    def __init__(self, scale: float = 0.1, pt_floor: float = 0.1):
        if scale < 0 or pt_floor <= 0:
            raise ConfigError(
                f"task.augmentations.smear: scale={scale} must not be negative and pt_floor={pt_floor} must be positive."
            )
        self.scale = float(scale)
        self.pt_floor = float(pt_floor)

    def __call__(self, p: Particles, generator=None) -> Particles:
        pt, y, phi, mt = cylindrical(p.v, p.mask)
        width = self.scale / torch.clamp(pt, min=self.pt_floor)
        y = y + width * _normal(pt.shape, pt, generator)
        phi = phi + width * _normal(pt.shape, pt, generator)
        return _rebuilt(p, pt, y, phi, mt)


class Split:
    """Collinear splitting of particles into two with fractions r, 1 - r; the jet re-sorted by pT."""

    def __init__(self, fraction: float = 0.1, neutral_only: bool | str = "auto", max_particles: int = 128):
        if not 0 <= fraction <= 1:
            raise ConfigError(f"task.augmentations.split.fraction={fraction} must lie in [0, 1].")
        if not (isinstance(neutral_only, bool) or neutral_only == "auto"):
            raise ConfigError(
                f"task.augmentations.split.neutral_only={neutral_only!r}; use true, false or auto."
            )
        self.fraction = float(fraction)
        self.neutral_only = neutral_only
        self.max_particles = int(max_particles)
        self.charge = None  # set by Augmenter: a function of x giving each particle's charge

    def __call__(self, p: Particles, generator=None) -> Particles:
        if self.neutral_only is True and self.charge is None:
            # splitting every particle instead would silently give charged particles twins
            raise ConfigError(
                "task.augmentations.split.neutral_only=true needs each particle's charge: set Split.charge "
                "(Augmenter sets it from the charge or PID columns)."
            )
        batch, n = p.mask.shape
        chosen = (_uniform((batch, n), 0.0, 1.0, p.v, generator) < self.fraction) & p.mask
        if self.neutral_only and self.charge is not None:
            chosen &= self.charge(p.x) == 0
        # at most the free slots below max_particles, the leading chosen particles first
        free = (self.max_particles - p.mask.sum(1, keepdim=True)).clamp_min(0)
        chosen &= torch.cumsum(chosen.long(), 1) <= free
        extra = int(chosen.sum(1).max()) if chosen.any() else 0
        if extra == 0:
            return p
        r = _uniform((batch, n), 0.0, 1.0, p.v, generator)
        v64 = p.v.double()
        kept = torch.where(chosen[..., None], v64 * r[..., None], v64)
        # each jet's halves 1 - r go to the slots after its particles, in the order of the originals
        slot = torch.cumsum(chosen.long(), 1) - 1  # among the chosen of the jet
        new_v = torch.zeros(batch, n + extra, 4, dtype=torch.float64, device=p.v.device)
        new_x = torch.zeros(batch, n + extra, p.x.shape[-1], dtype=p.x.dtype, device=p.x.device)
        new_mask = torch.zeros(batch, n + extra, dtype=torch.bool, device=p.mask.device)
        new_v[:, :n], new_x[:, :n], new_mask[:, :n] = kept, p.x, p.mask
        jets, originals = chosen.nonzero(as_tuple=True)
        target = p.mask.sum(1)[jets] + slot[jets, originals]
        new_v[jets, target] = v64[jets, originals] * (1 - r[jets, originals, None])
        new_x[jets, target] = p.x[jets, originals]
        new_mask[jets, target] = True
        return sort_by_pt(Particles(new_x, new_v.to(p.v.dtype), new_mask))


def sort_by_pt(p: Particles) -> Particles:
    """Each jet's particles in decreasing pT, padding last (the loader's order)."""
    pt = torch.hypot(p.v[..., 0].double(), p.v[..., 1].double())
    key = torch.where(p.mask, pt, torch.full_like(pt, -1.0))
    order = torch.sort(key, dim=1, descending=True, stable=True).indices
    return Particles(
        torch.gather(p.x, 1, order[..., None].expand_as(p.x)),
        torch.gather(p.v, 1, order[..., None].expand_as(p.v)),
        torch.gather(p.mask, 1, order),
    )


AUGMENTATIONS = {"rotate": Rotate, "translate": Translate, "smear": Smear, "split": Split}


class Augmenter:
    """Views of a batch: each view applies its list of augmentations, then recomputes the features.

    `views`: one list of augmentation names per view, e.g. JetCLR's
    `[[rotate, translate], [rotate, translate, smear, split]]`; `settings`: the keyword arguments of each
    augmentation by name (`task.augmentations`).
    """

    def __init__(self, recomputer: FeatureRecomputer, views: Sequence[Sequence[str]],
                 settings: Mapping[str, Mapping] | None = None):  # fmt: skip
        settings = dict(settings or {})
        unknown = [name for name in settings if name not in AUGMENTATIONS]
        if unknown:
            raise ConfigError(
                f"task.augmentations.{unknown[0]} is not an augmentation; choose from {', '.join(AUGMENTATIONS)}."
            )
        self.recomputer = recomputer
        names = recomputer.names
        pid_input = any(name in names for name in IDENTITY_COLUMNS)
        self.augmentations = {}
        for name, cls in AUGMENTATIONS.items():
            kwargs = dict(settings.get(name) or {})
            if cls is Split:
                kwargs.setdefault("max_particles", recomputer.features.max_particles)
                if kwargs.get("neutral_only", "auto") == "auto":
                    kwargs["neutral_only"] = pid_input
                elif kwargs["neutral_only"] is True and not pid_input:
                    raise ConfigError(
                        "task.augmentations.split.neutral_only=true, but no input tells a particle's charge "
                        f"(none of {', '.join(IDENTITY_COLUMNS)}); use auto or false."
                    )
            try:
                self.augmentations[name] = cls(**kwargs)
            except TypeError as err:
                raise ConfigError(f"task.augmentations.{name}: {err}; see jettag.features.augment.") from None
        split = self.augmentations["split"]
        if split.neutral_only:
            split.charge = self._charge
        self.views = [list(view) for view in views]
        for i, view in enumerate(self.views):
            for name in view:
                if name not in AUGMENTATIONS:
                    raise ConfigError(
                        f"task.views[{i}]: '{name}' is not an augmentation; choose from {', '.join(AUGMENTATIONS)}."
                    )

    def _charge(self, x: torch.Tensor) -> torch.Tensor:
        """Charge of each particle: the charge column, or 1 for flagged charged particles."""
        charge = self.recomputer.raw(x, "part_charge")
        if charge is not None:
            return torch.round(charge)
        charged = torch.zeros(x.shape[:2], device=x.device)
        for name in ("part_isChargedHadron", "part_isElectron", "part_isMuon"):
            flag = self.recomputer.raw(x, name)
            if flag is not None:
                charged = torch.maximum(charged, (flag > 0.5).float())
        return charged

    def view(self, k: int, x: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, generator=None) -> Particles:
        p = Particles(x, v, mask.bool())
        for name in self.views[k]:
            p = self.augmentations[name](p, generator)
        return Particles(self.recomputer(p.x, p.v, p.mask), p.v, p.mask)

    def __call__(self, x, v, mask, generator=None) -> list[Particles]:
        return [self.view(k, x, v, mask, generator) for k in range(len(self.views))]
