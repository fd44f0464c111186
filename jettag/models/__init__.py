"""Jet tagging models. Each takes (x, v, mask) channels-last and returns class logits."""

from jettag.models.base import JetTagger, class_scores
from jettag.models.complexity import count_macs, count_parameters
from jettag.models.part import ParticleTransformer
from jettag.models.particlenet import ParticleNet
from jettag.models.pcnn import ParticleCNN
from jettag.models.pfn import ParticleFlowNetwork
from jettag.models.weaver import load_weaver_weights

__all__ = [
    "JetTagger",
    "ParticleCNN",
    "ParticleFlowNetwork",
    "ParticleNet",
    "ParticleTransformer",
    "class_scores",
    "count_macs",
    "count_parameters",
    "load_weaver_weights",
]
