"""Feature sets: which per-particle variables a model sees and how each is standardized.

A feature set is configuration (`configs/features/*.yaml`). Each entry follows the convention
ParT users know from weaver data configs::

    - [part_pt_log, 1.7, 0.7]          # clip((x - 1.7) * 0.7, -5, 5)
    - [part_d0err, 0, 1, 0, 1]         # clip((x - 0) * 1, 0, 1)
    - [part_deta, null]                # used as it is
    - part_charge                      # same as [part_charge, null]
    - [part_pt_log, auto]              # center and scale fitted on the training data (clip -5..5)
    - [part_pt_log, auto, -5, 5]       # the same with an explicit clip range
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from jettag.errors import ConfigError


@dataclass(frozen=True)
class Feature:
    name: str
    center: float | None = None
    scale: float = 1.0
    lo: float = -5.0
    hi: float = 5.0
    auto: bool = False  # center and scale still to be fitted on the training data

    def transform(self, x: np.ndarray) -> np.ndarray:
        if self.auto:
            raise ConfigError(
                f"feature {self.name!r} is standardized 'auto' but was not fitted; give data.train_files "
                "to fit it, or use the features of a trained run (jettag-eval, jettag-predict)."
            )
        if self.center is None:
            return x
        return np.clip((x - self.center) * self.scale, self.lo, self.hi)

    @classmethod
    def parse(cls, entry, where: str) -> Feature:
        if isinstance(entry, str):
            return cls(entry)
        if isinstance(entry, Mapping):
            entry = [entry.get("name"), entry.get("center"), entry.get("scale", 1.0),
                     entry.get("min", -5.0), entry.get("max", 5.0)]  # fmt: skip
        if not isinstance(entry, Sequence) or not entry or not isinstance(entry[0], str) or len(entry) > 5:
            raise ConfigError(
                f"{where}: {entry!r} is not a feature; write [name], [name, null], [name, center, scale] "
                "or [name, center, scale, min, max]."
            )
        name, *params = entry
        if not params or params[0] is None:
            return cls(name)
        if params[0] == "auto":
            if len(params) not in (1, 3):
                raise ConfigError(f"{where}: write [{name}, auto] or [{name}, auto, min, max].")
            try:
                lo, hi = (float(p) for p in params[1:]) if len(params) == 3 else (-5.0, 5.0)
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: the clip range of {name!r} must be numbers.") from None
            if lo >= hi:
                raise ConfigError(f"{where}: the clip range of {name!r} is empty (min >= max).")
            return cls(name, lo=lo, hi=hi, auto=True)
        try:
            values = [float(p) for p in params]
        except (TypeError, ValueError):
            raise ConfigError(
                f"{where}: the center, scale and clip range of {name!r} must be numbers."
            ) from None
        if len(values) == 1:
            values.append(1.0)
        if len(values) == 3:
            raise ConfigError(f"{where}: give both min and max for {name!r}, or neither.")
        feature = cls(name, *values)
        if feature.lo >= feature.hi:
            raise ConfigError(f"{where}: the clip range of {name!r} is empty (min >= max).")
        return feature


@dataclass(frozen=True)
class FeatureSet:
    name: str
    features: tuple[Feature, ...]
    max_particles: int = 128

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def num_features(self) -> int:
        return len(self.features)

    @property
    def needs_fit(self) -> bool:
        return any(f.auto for f in self.features)

    @classmethod
    def from_config(cls, cfg: Mapping, where: str = "features") -> FeatureSet:
        entries = cfg.get("particle_features")
        if not entries:
            raise ConfigError(
                f"{where}.particle_features is empty; list the per-particle inputs of the model."
            )
        features = tuple(Feature.parse(e, f"{where}.particle_features[{i}]") for i, e in enumerate(entries))
        names = [f.name for f in features]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ConfigError(f"{where}.particle_features lists {', '.join(duplicated)} more than once.")
        max_particles = int(cfg.get("max_particles", 128))
        if max_particles < 1:
            raise ConfigError(f"{where}.max_particles must be at least 1, not {max_particles}.")
        return cls(name=str(cfg.get("name", "custom")), features=features, max_particles=max_particles)

    def to_config(self) -> dict:
        entries = [
            [f.name, "auto", f.lo, f.hi]
            if f.auto
            else [f.name, None]
            if f.center is None
            else [f.name, f.center, f.scale, f.lo, f.hi]
            for f in self.features
        ]
        return {"name": self.name, "max_particles": self.max_particles, "particle_features": entries}
