"""Tagger metrics on a test set: accuracy, ROC AUC and background rejection at fixed signal efficiency.

Conventions (Qu, Li, Qian 2022; REFERENCE.md sec. 5):

- Background rejection at signal efficiency eps_S is 1/eps_B, with eps_B read off the ROC curve
  (`sklearn.metrics.roc_curve`) by linear interpolation between its points at exactly eps_S. Where
  the curve runs at constant eps_S (tied scores), the lowest eps_B at that eps_S is taken. A
  rejection is `math.inf` when no background jet passes.
- Two classes: the discriminant is s_sig / (s_sig + s_bkg).
- More classes: "auc" is the macro average of the one-vs-rest AUCs of all classes, each on its own
  score s_k (as in the JetClass table); "rej50"/"rej30" take any signal class against the background
  with the score 1 - s_bkg; "per_class" compares each class X with the background using only jets of
  those two classes and the discriminant s_X / (s_X + s_bkg).

Ratios of probabilities are ranked by the equivalent log-odds log s_X - log s_bkg (and 1 - s_bkg by
-log s_bkg), computed in float64. A ROC curve depends only on the order of the scores, so the results
are those of the ratio itself, but without the ties that float32 rounding of a ratio close to 1 would
create among the most signal-like jets, exactly where Rej@30% is read.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import auc as _area
from sklearn.metrics import roc_curve

from jettag.errors import DataError

DEFAULT_EFFICIENCIES = (0.5, 0.3)
# Working points quoted in the ParT paper besides 50% / 30%: class-name suffix -> signal efficiency.
EXTRA_EFFICIENCIES = {"Hqql": 0.99, "Tbl": 0.995}
_TINY = np.finfo(np.float64).tiny


def rejection_key(efficiency: float) -> str:
    """Metric name of a working point: 0.5 -> "rej50", 0.99 -> "rej99", 0.995 -> "rej995"."""
    percent = f"{round(efficiency * 100, 6):g}"
    return "rej" + percent.replace(".", "")


def _check_efficiency(efficiency) -> np.ndarray:
    eff = np.asarray(efficiency, dtype=np.float64)
    if not np.all((eff > 0) & (eff <= 1)):
        raise ValueError(f"signal efficiencies must lie in (0, 1], not {efficiency}.")
    return eff


def background_efficiency(fpr: np.ndarray, tpr: np.ndarray, efficiency) -> np.ndarray:
    """eps_B of a ROC curve (fpr, tpr as from `roc_curve`) at the signal efficiencies `efficiency`.

    Linear interpolation along the curve; where several points share the requested tpr, the first
    (lowest fpr) is taken, which `np.interp` would not guarantee.
    """
    eff = np.asarray(efficiency, dtype=np.float64)
    idx = np.minimum(np.searchsorted(tpr, eff, side="left"), len(tpr) - 1)
    prev = np.maximum(idx - 1, 0)
    on_point = tpr[idx] <= eff  # exact hit, or eff beyond the last point by rounding
    span = np.where(on_point, 1.0, tpr[idx] - tpr[prev])
    frac = np.where(on_point, 0.0, (eff - tpr[prev]) / span)
    return np.where(on_point, fpr[idx], fpr[prev] + frac * (fpr[idx] - fpr[prev]))


def _as_binary(y_true: np.ndarray) -> np.ndarray:
    y = np.asarray(y_true)
    if y.dtype != bool:
        if np.any((y != 0) & (y != 1)):
            raise ValueError("y_true must hold 1 for signal and 0 for background only.")
        y = y == 1
    num_signal = int(np.count_nonzero(y))
    if num_signal == 0 or num_signal == len(y):
        missing = "signal (y_true = 1)" if num_signal == 0 else "background (y_true = 0)"
        raise DataError(
            f"there are no {missing} jets, so no ROC curve can be computed; both classes are needed."
        )
    return y


def _finite(score: np.ndarray) -> np.ndarray:
    score = np.asarray(score)
    if not np.all(np.isfinite(score)):
        raise DataError("the scores hold NaN or inf values; a ROC curve needs finite scores.")
    return score


def _roc(y_true: np.ndarray, score: np.ndarray, sample_weight=None) -> tuple[np.ndarray, np.ndarray]:
    fpr, tpr, _ = roc_curve(_as_binary(y_true), _finite(score), sample_weight=sample_weight)
    return fpr, tpr


def _rejection(eps_b: float) -> float:
    return math.inf if eps_b <= 0 else float(1.0 / eps_b)


def background_rejection(
    y_true: np.ndarray, score: np.ndarray, efficiency: float, sample_weight=None
) -> float:
    """1/eps_B at signal efficiency `efficiency` (y_true: 1 = signal); `math.inf` when eps_B is 0."""
    eff = _check_efficiency(efficiency)
    fpr, tpr = _roc(y_true, score, sample_weight)
    return _rejection(float(background_efficiency(fpr, tpr, eff)))


def _binary_from_roc(fpr: np.ndarray, tpr: np.ndarray, efficiencies) -> dict:
    eff = _check_efficiency(efficiencies)
    eps_b = np.atleast_1d(background_efficiency(fpr, tpr, eff))
    metrics = {"auc": float(_area(fpr, tpr))}
    for e, b in zip(np.atleast_1d(eff), eps_b, strict=True):
        metrics[rejection_key(float(e))] = _rejection(float(b))
    return metrics


def binary_metrics(y_true: np.ndarray, score: np.ndarray, efficiencies=DEFAULT_EFFICIENCIES) -> dict:
    """{"auc", "rej50", "rej30", ...} of a signal-vs-background score (y_true: 1 = signal), one ROC curve."""
    return _binary_from_roc(*_roc(y_true, score), efficiencies)


def rank_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic, ties counted 1/2: the area `roc_auc_score` gives.

    One unstable sort of the scores as they are (float32 stays float32), about 3x faster than
    `roc_auc_score` on large sets, which matters for the K one-vs-rest AUCs of 20M test jets.
    """
    y = _as_binary(y_true)
    score = _finite(score)
    order = np.argsort(score)
    sorted_score = score[order]
    starts = np.r_[0, np.flatnonzero(sorted_score[1:] != sorted_score[:-1]) + 1]
    ends = np.r_[starts[1:], len(score)]
    positives = np.add.reduceat(y[order].astype(np.int64), starts)
    mean_rank = (starts + ends + 1) / 2  # 1-based rank shared by a group of tied scores
    num_pos = int(np.count_nonzero(y))
    num_neg = len(y) - num_pos
    return float((positives @ mean_rank - num_pos * (num_pos + 1) / 2) / num_pos / num_neg)


def log_odds(s_sig: np.ndarray, s_bkg: np.ndarray) -> np.ndarray:
    """log s_sig - log s_bkg in float64: ranks jets exactly as s_sig / (s_sig + s_bkg) does.

    Probabilities are floored at the smallest normal float64, so jets with both at 0 (float32
    underflow) get 0, i.e. a ratio of 1/2.
    """
    s_sig = np.maximum(np.asarray(s_sig, dtype=np.float64), _TINY)
    s_bkg = np.maximum(np.asarray(s_bkg, dtype=np.float64), _TINY)
    return np.log(s_sig) - np.log(s_bkg)


def signal_fraction(s_sig: np.ndarray, s_bkg: np.ndarray) -> np.ndarray:
    """s_sig / (s_sig + s_bkg) in float64, 1/2 where both are 0: the discriminant users histogram."""
    s_sig = np.asarray(s_sig, dtype=np.float64)
    total = s_sig + np.asarray(s_bkg, dtype=np.float64)
    return np.divide(s_sig, total, out=np.full_like(total, 0.5), where=total > 0)


def _validate(labels, scores, class_names, background) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    scores = np.asarray(scores)
    if scores.ndim != 2 or labels.shape != (len(scores),):
        raise ValueError(f"need labels (N,) and scores (N, K); got {labels.shape} and {scores.shape}.")
    num_classes = scores.shape[1]
    if num_classes < 2 or len(class_names) != num_classes:
        raise ValueError(
            f"scores have {num_classes} columns for the {len(class_names)} classes {list(class_names)}."
        )
    if not 0 <= background < num_classes:
        raise ValueError(f"background={background} is not a class index of {list(class_names)}.")
    if labels.dtype.kind not in "iub":
        raise ValueError(f"labels must be integer class indices, not {labels.dtype}.")
    if len(labels) == 0:
        raise DataError("the test set has no jets, so no metric can be computed; check the test files.")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(
            f"the labels hold class indices outside 0..{num_classes - 1} "
            f"(min {labels.min()}, max {labels.max()}); the labels do not match the model's classes."
        )
    finite = np.isfinite(scores).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise DataError(
            f"the model's scores are NaN or infinite for {len(bad)} of the {len(scores)} test jets "
            f"(the first is jet {bad[0]}); the network diverged or was fed non-finite inputs: check the "
            "training (learning rate, precision) and the inputs (data.drop_nonfinite_jets)."
        )
    row_sums = scores.sum(axis=1, dtype=np.float64)
    if scores.min() < 0 or np.abs(row_sums - 1).max() > 1e-2:
        raise ValueError(
            "scores must be class probabilities (softmax outputs, rows summing to 1), not logits."
        )
    return labels, scores


def _require(counts: np.ndarray, class_names, cls: int, purpose: str) -> None:
    if counts[cls] == 0:
        raise DataError(
            f"the test set has no jets of class {class_names[cls]}, so {purpose} cannot be computed; "
            f"evaluate on files that contain every class in data.labels, or leave {class_names[cls]} "
            "out of data.labels."
        )


def metrics_and_curves(
    labels: np.ndarray, scores: np.ndarray, class_names, background: int = 0, efficiency_grid=None
) -> tuple[dict, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """`compute_metrics`, and the ROC curve of each signal class sampled at `efficiency_grid`.

    The curves map a signal class name to (signal efficiencies, eps_B); they are what the rejection
    plot draws, computed from the same sorts as the metrics.
    """
    labels, scores = _validate(labels, scores, class_names, background)
    names = [str(n) for n in class_names]
    num_classes = len(names)
    counts = np.bincount(labels, minlength=num_classes)
    bkg_name = names[background]
    _require(counts, names, background, f"rejection against {bkg_name}")

    metrics: dict = {
        "accuracy": float(np.count_nonzero(scores.argmax(axis=1) == labels) / len(labels)),
        "auc": math.nan,
        "rej50": math.nan,
        "rej30": math.nan,
        "num_jets": len(labels),
        "class_names": names,
        "background": bkg_name,
        "num_jets_per_class": {n: int(c) for n, c in zip(names, counts, strict=True)},
    }
    curves = {}
    grid = None if efficiency_grid is None else _check_efficiency(efficiency_grid)
    bkg_scores = scores[:, background]

    def pair_metrics(cls: int, mask: np.ndarray | None) -> dict:
        """Class `cls` against the background on the jets in `mask` (all jets if None)."""
        y = labels == cls if mask is None else labels[mask] == cls
        s_sig, s_bkg = (scores[:, cls], bkg_scores) if mask is None else (scores[mask, cls], bkg_scores[mask])
        fpr, tpr = _roc(y, log_odds(s_sig, s_bkg))
        extra = [e for suffix, e in EXTRA_EFFICIENCIES.items() if names[cls].endswith(suffix)]
        if grid is not None:
            curves[names[cls]] = (grid, background_efficiency(fpr, tpr, grid))
        return _binary_from_roc(fpr, tpr, (*DEFAULT_EFFICIENCIES, *extra))

    if num_classes == 2:
        signal = 1 - background
        _require(counts, names, signal, f"the {names[signal]}-vs-{bkg_name} ROC curve")
        binary = pair_metrics(signal, None)
        metrics.update(auc=binary["auc"], rej50=binary["rej50"], rej30=binary["rej30"], signal=names[signal])
        return metrics, curves

    for cls in range(num_classes):
        _require(counts, names, cls, "the macro-averaged one-vs-rest AUC")
    metrics["auc"] = float(np.mean([rank_auc(labels == cls, scores[:, cls]) for cls in range(num_classes)]))
    # any signal vs background: 1 - s_bkg, ranked as -log s_bkg (same order, no float32 saturation)
    any_signal = _binary_from_roc(
        *_roc(labels != background, -np.log(np.maximum(bkg_scores, _TINY))), DEFAULT_EFFICIENCIES
    )
    metrics.update(rej50=any_signal["rej50"], rej30=any_signal["rej30"])

    is_bkg = labels == background
    per_class = {}
    for cls in range(num_classes):
        if cls != background:
            per_class[names[cls]] = {
                **pair_metrics(cls, is_bkg | (labels == cls)),
                "num_jets": int(counts[cls]),
            }
    metrics["per_class"] = per_class
    return metrics, curves


def compute_metrics(
    labels: np.ndarray, scores: np.ndarray, class_names: list[str], background: int = 0
) -> dict:
    """Accuracy, AUC and rejections of class probabilities `scores` (N, K) for true classes `labels` (N,).

    Keys: "accuracy" (argmax), "auc", "rej50", "rej30", "num_jets", "class_names", "background" (its
    name), "num_jets_per_class"; "signal" (its name) for two classes; "per_class" ({name: {"auc", "rej50",
    "rej30", ["rej99" for *Hqql, "rej995" for *Tbl], "num_jets" (jets of that class)}}) for more. The
    conventions are those of the module docstring. Raises `DataError` when a class has no jets or a
    score is not finite.
    """
    return metrics_and_curves(labels, scores, class_names, background)[0]
