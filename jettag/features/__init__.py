"""Per-particle features (kinematics with `vector`, standardization) and ParT's pairwise features."""

from jettag.features.pairwise import pairwise_features
from jettag.features.sets import Feature, FeatureSet

__all__ = ["Feature", "FeatureSet", "pairwise_features"]
