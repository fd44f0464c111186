"""Jet tagging models. Each takes (x, v, mask) channels-last and returns class logits."""

from jettag.models.part import ParticleTransformer

__all__ = ["ParticleTransformer"]
