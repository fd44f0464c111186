"""Pairwise particle features of the ParT interaction matrix (REFERENCE.md section 3).

For particles a and b with transverse momentum pt, rapidity y and azimuth phi:

    Delta = sqrt((y_a - y_b)^2 + dphi^2)         kT = min(pt_a, pt_b) * Delta
    z     = min(pt_a, pt_b) / (pt_a + pt_b)      m^2 = (E_a + E_b)^2 - |p_a + p_b|^2

returned as (ln kT, ln z, ln Delta, ln m^2), each logarithm of a value clamped at `eps`. All four
are symmetric in (a, b), so callers compute them for one ordering of each pair only.

The arithmetic follows weaver-core's `pairwise_lv_fts` operation by operation (pt as the root of
px^2 + py^2, y = 0.5 ln(1 + 2 pz / (E - pz)), |p|^2 summed as px^2 + py^2 + pz^2), so that
weights trained there see the same float32 inputs here: m^2 of nearly collinear massless
particles is a difference of large numbers, and its rounding would otherwise differ.
"""

from __future__ import annotations

import math

import torch

PAIR_FEATURES = ("lnkt", "lnz", "lndelta", "lnm2")


def particle_kinematics(p: torch.Tensor) -> torch.Tensor:
    """(..., N, 4) four-vectors (px, py, pz, E) -> (..., N, 7) (px, py, pz, E, pt, y, phi), per particle once.

    Computed on a channels-first copy, (..., 4, N), the layout weaver-core computes on: vectorized
    and scalar `log` / `atan2` may differ in the last bit, and Delta of nearly collinear particles
    (a difference of two rapidities) turns one bit into a visible change of ln Delta.
    """
    px, py, pz, energy = p.transpose(-1, -2).contiguous().unbind(-2)
    pt = torch.sqrt(px.square() + py.square())
    # y = 0.5 ln((E + pz) / (E - pz)), written to stay finite for particles along the beam
    rapidity = 0.5 * torch.log(1 + (2 * pz) / (energy - pz).clamp(min=1e-20))
    phi = torch.atan2(py, px)
    return torch.stack((px, py, pz, energy, pt, rapidity, phi), dim=-1)


def pair_features_from_kinematics(ka: torch.Tensor, kb: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(..., 7) kinematics of `particle_kinematics` for pairs -> (..., 4) (ln kT, ln z, ln Delta, ln m^2)."""
    px, py, pz, energy = (ka[..., :4] + kb[..., :4]).unbind(-1)
    pt_a, y_a, phi_a = ka[..., 4:].unbind(-1)
    pt_b, y_b, phi_b = kb[..., 4:].unbind(-1)
    dphi = torch.remainder(phi_a - phi_b + math.pi, 2 * math.pi) - math.pi
    delta = torch.sqrt((y_a - y_b).square() + dphi.square())
    pt_min = torch.minimum(pt_a, pt_b)
    lndelta = torch.log(delta.clamp(min=eps))
    lnkt = torch.log((pt_min * delta).clamp(min=eps))
    lnz = torch.log((pt_min / (pt_a + pt_b).clamp(min=eps)).clamp(min=eps))
    m2 = energy.square() - (px.square() + py.square() + pz.square())
    lnm2 = torch.log(m2.clamp(min=eps))
    return torch.stack((lnkt, lnz, lndelta, lnm2), dim=-1)


def pairwise_features(pa: torch.Tensor, pb: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(..., 4) four-vectors (px, py, pz, E) of pairs -> (..., 4) features (ln kT, ln z, ln Delta, ln m^2)."""
    if pa.dim() == 1:
        return pairwise_features(pa[None], pb[None], eps)[0]
    return pair_features_from_kinematics(particle_kinematics(pa), particle_kinematics(pb), eps)
