"""Pairwise particle features of the ParT interaction matrix (REFERENCE.md section 3).

For particles a and b with transverse momentum pt, rapidity y and azimuth phi:

    Delta = sqrt((y_a - y_b)^2 + dphi^2)         kT = min(pt_a, pt_b) * Delta
    z     = min(pt_a, pt_b) / (pt_a + pt_b)      m^2 = (E_a + E_b)^2 - |p_a + p_b|^2

returned as (ln kT, ln z, ln Delta, ln m^2), each logarithm of a value clamped at `eps`. All four
are symmetric in (a, b), so callers compute them for a <= b only.
"""

from __future__ import annotations

import math

import torch

PAIR_FEATURES = ("lnkt", "lnz", "lndelta", "lnm2")


def _pt_rapidity_phi(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    px, py, pz, energy = p.unbind(-1)
    pt = torch.hypot(px, py)
    # y = 0.5 ln((E + pz) / (E - pz)), written to stay finite for particles along the beam
    rapidity = 0.5 * torch.log1p(2 * pz / (energy - pz).clamp(min=1e-20))
    phi = torch.atan2(py, px)
    return pt, rapidity, phi


def pairwise_features(pa: torch.Tensor, pb: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(..., 4) four-vectors (px, py, pz, E) of pairs -> (..., 4) features (ln kT, ln z, ln Delta, ln m^2)."""
    pt_a, y_a, phi_a = _pt_rapidity_phi(pa)
    pt_b, y_b, phi_b = _pt_rapidity_phi(pb)
    dphi = torch.remainder(phi_a - phi_b + math.pi, 2 * math.pi) - math.pi
    delta = torch.sqrt((y_a - y_b).square() + dphi.square())
    pt_min = torch.minimum(pt_a, pt_b)
    lndelta = torch.log(delta.clamp(min=eps))
    lnkt = torch.log((pt_min * delta).clamp(min=eps))
    lnz = torch.log((pt_min / (pt_a + pt_b).clamp(min=eps)).clamp(min=eps))
    p = pa + pb
    m2 = p[..., 3].square() - p[..., :3].square().sum(-1)
    lnm2 = torch.log(m2.clamp(min=eps))
    return torch.stack((lnkt, lnz, lndelta, lnm2), dim=-1)
