"""What is fitted on the training data before training: feature standardization and sampling weights.

Both use the same sample, a fraction of the training files read through the same builder (same
selection, same skips): `data.fit_fraction` of each file, at most `data.fit_max_jets` jets in all,
spread evenly over the files so that per-class file groups all contribute.

- Standardization `auto`: for every feature marked `auto` (or, with `data.standardization: auto`,
  every standardized feature), the center is the median and the scale is one over the larger
  half-width of the central 68% interval (16th to 84th percentile), so that most values land in
  [-1, 1] before the clip. Stored in the run directory as `standardization.json`, and the fitted
  numbers replace `auto` in the run configuration that checkpoints carry: jettag-eval,
  jettag-predict and jettag-export standardize the same way.
- Reweighting: per-class sampling weights. `flat` flattens each class's distribution of the
  reweighting variables (jet pT, optionally the mass) in the given bins to a uniform shape, and
  gives every class the same total; `balance` only equalizes the classes. Jets outside the bins
  get weight 0. Training draws jets with these weights (see `JetDataModule`). Written to the run
  directory as `reweighting.json` and `reweighting.png` (each class before and after).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from jettag.data.arrays import JetArrays
from jettag.errors import ConfigError
from jettag.features.sets import Feature, FeatureSet

log = logging.getLogger(__name__)


def raw_feature_set(features: FeatureSet, refit: bool) -> FeatureSet:
    """`features` with the features to fit left untransformed (center None), for fitting."""
    return replace(
        features,
        features=tuple(Feature(f.name) if _to_fit(f, refit) else f for f in features.features),
    )


def _to_fit(feature: Feature, refit: bool) -> bool:
    return feature.auto or (refit and feature.center is not None)


def fit_standardization(features: FeatureSet, raw: np.ndarray, refit: bool) -> FeatureSet:
    """Fitted copy of `features`; `raw` holds the untransformed values (particles, C) of the sample."""
    fitted = []
    for column, feature in enumerate(features.features):
        if not _to_fit(feature, refit):
            fitted.append(feature)
            continue
        values = raw[:, column]
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise ConfigError(
                f"features: cannot fit '{feature.name}', the training sample has no finite value of it."
            )
        lower, center, upper = np.percentile(values.astype(np.float64), [16, 50, 84])
        width = max(upper - center, center - lower)
        scale = 1.0 / width if width > 0 else 1.0
        fitted.append(Feature(feature.name, float(center), float(scale), feature.lo, feature.hi))
    return replace(features, features=tuple(fitted))


def standardization_record(features: FeatureSet, jets: int, particles: int) -> dict:
    return {
        "fitted_on": {"jets": jets, "particles": particles},
        "transform": "clip((x - center) * scale, min, max)",
        "features": {
            f.name: {"center": f.center, "scale": f.scale, "min": f.lo, "max": f.hi}
            for f in features.features
            if f.center is not None
        },
        "feature_set": features.to_config(),
    }


@dataclass
class Reweighting:
    """Sampling weight of each jet from its class and its bin in the reweighting variables."""

    mode: str  # "flat" or "balance"
    variables: list[str]
    edges: list[np.ndarray]
    table: np.ndarray  # (classes, bins...) weights; max 1
    class_names: list[str]

    @classmethod
    def from_config(cls, cfg: Mapping | None, class_names: Sequence[str]) -> Reweighting | None:
        if not cfg:
            return None
        key = "data.reweight"
        mode = cfg.get("mode", "flat")
        if mode not in ("flat", "balance"):
            raise ConfigError(f"{key}.mode={mode!r}; use flat (flatten pT/mass per class) or balance.")
        variables = list(cfg.get("variables") or (["jet_pt"] if mode == "flat" else []))
        bins = cfg.get("bins") or {}
        if not isinstance(bins, Mapping):
            raise ConfigError(
                f"{key}.bins={bins!r}; give the bin edges per variable, e.g. {key}.bins.jet_pt=[500, 600, 700, 800]."
            )
        edges = []
        for name in variables:
            values = bins.get(name)
            try:
                values = np.asarray(values, dtype=np.float64)
            except (TypeError, ValueError):
                values = None
            if values is None or values.ndim != 1 or len(values) < 2 or np.any(np.diff(values) <= 0):
                raise ConfigError(
                    f"{key}.bins.{name} must list at least two increasing bin edges, e.g. [500, 600, 700, 800]."
                )
            edges.append(values)
        if mode == "flat" and not variables:
            raise ConfigError(f"{key}.variables is empty; flat reweighting needs e.g. [jet_pt].")
        shape = (len(class_names), *(len(e) - 1 for e in edges))
        return cls(mode, variables, edges, np.ones(shape), list(class_names))

    def bin_index(self, observers: Mapping[str, np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
        """Bin of every jet in each variable, and whether it lies inside all bins."""
        index, inside = [], np.ones(n, dtype=bool)
        for name, edges in zip(self.variables, self.edges, strict=True):
            values = np.asarray(observers[name], dtype=np.float64)
            i = np.searchsorted(edges, values, side="right") - 1
            ok = (i >= 0) & (i < len(edges) - 1)
            inside &= ok
            index.append(np.clip(i, 0, len(edges) - 2))
        return tuple(index), inside

    def histograms(self, jets: JetArrays) -> np.ndarray:
        """Jets per (class, bin...)."""
        index, inside = self.bin_index(jets.observers, len(jets))
        counts = np.zeros(self.table.shape)
        np.add.at(counts, (jets.labels[inside], *(i[inside] for i in index)), 1)
        return counts

    def fit(self, jets: JetArrays) -> None:
        counts = self.histograms(jets)
        present = counts.reshape(len(counts), -1).sum(axis=1) > 0
        if not present.any():
            raise ConfigError(
                "data.reweight: no jet of the fit sample lies inside data.reweight.bins; widen the bins."
            )
        missing = [n for n, p in zip(self.class_names, present, strict=True) if not p]
        if missing:
            log.warning(
                "data.reweight: no jet of class %s inside the bins in the fit sample; its jets keep weight 1 "
                "(not reweighted)", ", ".join(missing),
            )  # fmt: skip
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.mode == "flat":
                # every filled (class, bin) cell gets the same total weight, then every class the same total
                table = np.where(counts > 0, 1.0 / counts, 0.0)
                filled = (counts > 0).reshape(len(counts), -1).sum(axis=1)
                table /= filled.reshape(-1, *([1] * (table.ndim - 1)))
            else:
                table = np.broadcast_to(
                    (1.0 / counts.reshape(len(counts), -1).sum(axis=1)).reshape(
                        -1, *([1] * (counts.ndim - 1))
                    ),
                    counts.shape,
                ).copy()
                table[counts == 0] = 0.0
        self.table = table / table.max()
        self.table[~present] = 1.0

    def weights(self, jets: JetArrays) -> np.ndarray:
        """Sampling weight (0..1) of each jet; 0 outside the bins."""
        index, inside = self.bin_index(jets.observers, len(jets))
        w = self.table[(jets.labels, *index)]
        return np.where(inside, w, 0.0)

    def record(self, jets: JetArrays) -> dict:
        counts = self.histograms(jets)
        return {
            "mode": self.mode,
            "variables": self.variables,
            "bins": {n: e.tolist() for n, e in zip(self.variables, self.edges, strict=True)},
            "classes": self.class_names,
            "weights": self.table.tolist(),
            "fit_sample_counts": counts.tolist(),
            "weighted_counts": (counts * self.table).tolist(),
        }

    def plot(self, jets: JetArrays, path: Path) -> None:
        """Each class's distribution of the first variable, before and after weighting (unit area)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        name = self.variables[0] if self.variables else None
        classes = len(self.class_names)
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
        w = self.weights(jets)
        for k in range(classes):
            mine = jets.labels == k
            if name is None:
                continue
            values = np.asarray(jets.observers[name])[mine]
            edges = self.edges[0]
            axes[0].hist(values, edges, histtype="step", density=True, label=self.class_names[k])
            axes[1].hist(
                values, edges, weights=w[mine], histtype="step", density=True, label=self.class_names[k]
            )
        if name is None:  # balance only: the class fractions
            before = np.bincount(jets.labels, minlength=classes) / len(jets)
            after = np.bincount(jets.labels, weights=w, minlength=classes)
            after = after / after.sum()
            axes[0].bar(range(classes), before)
            axes[1].bar(range(classes), after)
            for ax in axes:
                ax.set_xticks(range(classes), self.class_names, rotation=60)
        for ax, title in zip(axes, ("fit sample", f"after {self.mode} reweighting"), strict=True):
            ax.set_title(title)
            if name is not None:
                ax.set_xlabel(name)
                ax.set_ylabel("jets (unit area)")
                ax.legend(fontsize="small", ncol=2)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)


def sample_ranges(num_entries: Sequence[int], fraction: float, max_jets: int) -> list[tuple[int, int]]:
    """The entry range `(0, stop)` read from each file for the fit sample."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"data.fit_fraction must be in (0, 1], not {fraction}.")
    per_file = math.ceil(max_jets / max(len(num_entries), 1))
    return [(0, min(math.ceil(fraction * n), per_file, n)) for n in num_entries]


def write_json(path: Path, record: dict) -> None:
    path.write_text(json.dumps(record, indent=2) + "\n")
