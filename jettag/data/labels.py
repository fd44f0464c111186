"""Class labels: one-hot label branches (JetClass) or one integer column (converted top tagging)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import awkward as ak
import numpy as np

from jettag.errors import ConfigError, DataError


@dataclass(frozen=True)
class LabelSpec:
    """How to read the class of each jet.

    `branches` are one-hot label branches (one per class, in class order) when `one_hot`, else a
    single integer column whose value is the class index. `class_names` name the classes in
    reports and in `score_<name>` branches; for one-hot labels they default to the branch names.
    """

    branches: tuple[str, ...]
    one_hot: bool
    class_names: tuple[str, ...]

    @classmethod
    def from_config(
        cls, labels, class_names: Sequence[str] | None = None, key: str = "data.labels"
    ) -> LabelSpec:
        if isinstance(labels, str):
            names = tuple(class_names) if class_names else (f"{labels}_0", f"{labels}_1")
            if len(names) < 2:
                raise ConfigError(f"data.class_names needs at least two classes, not {list(names)}.")
            return cls((labels,), False, names)
        branches = tuple(str(b) for b in (labels or ()))
        if len(branches) < 2:
            raise ConfigError(
                f"{key} must list at least two one-hot label branches (e.g. [label_QCD, label_Tbqq]) "
                "or name one integer label column (e.g. label)."
            )
        if len(set(branches)) != len(branches):
            raise ConfigError(f"{key} lists a label branch twice: {list(branches)}.")
        names = tuple(class_names) if class_names else branches
        if len(names) != len(branches):
            raise ConfigError(
                f"data.class_names has {len(names)} names but {key} has {len(branches)} label branches."
            )
        return cls(branches, True, names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def index(self, name: str | None, key: str = "data.background") -> int:
        if name is None:
            return 0
        for candidates in (self.class_names, self.branches if self.one_hot else ()):
            if name in candidates:
                return list(candidates).index(name)
        raise ConfigError(f"{key}={name!r} is not one of the classes {list(self.class_names)}.")

    def group_index(self, group: str, key: str) -> int:
        """The class of a per-class file group `NAME:pattern`: NAME is a class name or label branch
        (with or without its `label_` prefix)."""
        for candidates in (self.class_names, self.branches):
            for k, name in enumerate(candidates):
                if group in (name, name.removeprefix("label_")):
                    return k
        raise ConfigError(
            f"{key}: the file group '{group}:' names no class; use one of "
            f"{', '.join(n.removeprefix('label_') for n in self.class_names)}."
        )

    def truth_of(self, labels: np.ndarray) -> dict[str, np.ndarray]:
        """The label branches as a file would hold them, for jets of known class."""
        if self.one_hot:
            return {b: (labels == k).astype(np.int32) for k, b in enumerate(self.branches)}
        return {self.branches[0]: labels.astype(np.int32)}

    def decode(
        self, arrays: ak.Array, where: str, first_entry: int = 0
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Class index of each jet, and the label branches as read (for the predictions file)."""
        columns = {}
        for branch in self.branches:
            values = arrays[branch]
            if values.ndim != 1:
                raise DataError(
                    f"{where}: label branch '{branch}' holds several values per jet; it must hold one."
                )
            columns[branch] = ak.to_numpy(values)
        if self.one_hot:
            onehot = np.stack([columns[b].astype(np.float64) for b in self.branches], axis=1)
            bad = ~np.all((onehot == 0) | (onehot == 1), axis=1) | (onehot.sum(axis=1) != 1)
            if bad.any():
                i = int(np.argmax(bad))
                row = ", ".join(f"{b}={onehot[i, k]:g}" for k, b in enumerate(self.branches))
                raise DataError(
                    f"{where}: the label branches are not one-hot at entry {first_entry + i} ({row}); list in data.labels "
                    "exactly one branch per class present in the files, and only files of those classes."
                )
            labels = onehot.argmax(axis=1)
            truth = {b: columns[b].astype(np.int32) for b in self.branches}
        else:
            (branch,) = self.branches
            raw = columns[branch].astype(np.float64)
            bad = (raw != np.round(raw)) | (raw < 0) | (raw >= self.num_classes) | ~np.isfinite(raw)
            if bad.any():
                i = int(np.argmax(bad))
                raise DataError(
                    f"{where}: label column '{branch}' has value {raw[i]:g} at entry {first_entry + i}, not a class index "
                    f"0..{self.num_classes - 1}; list the classes in data.class_names."
                )
            labels = raw.astype(np.int64)
            truth = {branch: labels.astype(np.int32)}
        return labels.astype(np.int64), truth
