"""Tagger metrics for jets you scored yourself: ROC curve, AUC and background rejection.

Conventions (the field's, as in the ParT and ParticleNet papers):

- Signal jets have label 1 (or `True`), background jets label 0 (or `False`); a larger score means
  a more signal-like jet. A jet passes a cut when its score is at or above the threshold.
- Signal efficiency eps_S is the fraction of signal jets that pass a cut, background efficiency eps_B
  the fraction of background jets that pass it: eps_S and eps_B are scikit-learn's true and false
  positive rates.
- Background rejection at signal efficiency eps_S is 1/eps_B, with eps_B read off the ROC curve by
  linear interpolation between its points; it is `math.inf` when no background jet passes.

The numbers are those of `jettag.evaluation.metrics`, which `jettag-eval` writes to its report. Example
on a toy tagger (Gaussian scores, signal shifted by 2 standard deviations):

    import numpy as np
    from jettag.metrics import auc, rejection
    rng = np.random.default_rng(1)
    labels = rng.random(100_000) < 0.5
    scores = rng.normal(np.where(labels, 2.0, 0.0), 1.0)
    auc(labels, scores)                   # 0.9207
    print(rejection(labels, scores, 0.3))  # 162.7 +- 9.3
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import sklearn.metrics
from numpy.typing import ArrayLike, NDArray

from jettag.errors import DataError
from jettag.evaluation.metrics import _as_binary, _finite, _rejection, _roc, background_efficiency, rank_auc

__all__ = ["Rejection", "auc", "rejection", "roc_curve"]


@dataclass(frozen=True)
class Rejection:
    """A background rejection 1/eps_B with its statistical uncertainty, as `rejection` returns it.

    `value` and `uncertainty` are `math.inf` when no background jet passes the cut. `str()` gives the
    value and uncertainty rounded alike, e.g. "41.8 +- 3.2"; `float()` gives the value.
    """

    value: float
    uncertainty: float
    background_efficiency: float
    background_jets: int

    def __str__(self) -> str:
        if not math.isfinite(self.uncertainty) or not math.isfinite(self.value):
            return f"{self.value:g} +- {self.uncertainty:g}"
        if self.uncertainty <= 0:
            return f"{self.value:.4g} +- 0"
        # two significant digits of the uncertainty, the value to the same decimal place
        decimals = max(0, 1 - math.floor(math.log10(self.uncertainty)))
        return f"{self.value:.{decimals}f} +- {self.uncertainty:.{decimals}f}"

    def __float__(self) -> float:
        return self.value


def _check(
    labels: ArrayLike, scores: ArrayLike, sample_weight: ArrayLike | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Labels as booleans, scores and weights as arrays; `DataError` with one sentence if they do not fit."""
    y = np.asarray(labels)
    s = np.asarray(scores)
    if y.ndim != 1 or s.ndim != 1:
        raise DataError(
            f"labels and scores must be 1-D arrays with one value per jet, not of shapes {y.shape} and "
            f"{s.shape}."
        )
    if len(y) != len(s):
        raise DataError(
            f"labels and scores must have one entry per jet each, but there are {len(y)} labels and "
            f"{len(s)} scores."
        )
    accepted = "labels must be booleans or the integers 0 and 1 (True or 1 = signal, False or 0 = background)"
    if y.dtype.kind not in "biu" and len(y):  # no jets at all: said below
        raise DataError(f"{accepted}, not values of type {y.dtype}.")
    if y.dtype.kind != "b" and np.any((y != 0) & (y != 1)):
        raise DataError(f"{accepted}, but they also hold {np.setdiff1d(y, [0, 1])[:5].tolist()}.")
    y = y.astype(bool)
    num_signal = int(np.count_nonzero(y))
    if num_signal == 0 or num_signal == len(y):
        missing = "signal (label 1)" if num_signal == 0 else "background (label 0)"
        raise DataError(
            f"the {len(y)} jets include no {missing} jets; a ROC curve needs at least one signal and "
            "one background jet."
        )
    if s.dtype.kind not in "biuf":
        raise DataError(f"scores must be real numbers, not values of type {s.dtype}.")
    num_nan = int(np.count_nonzero(np.isnan(s)))
    if num_nan:
        raise DataError(
            f"{num_nan} of the {len(s)} scores are NaN; drop those jets first, e.g. with "
            "keep = ~np.isnan(scores); labels, scores = labels[keep], scores[keep]."
        )
    num_inf = int(np.count_nonzero(np.isinf(s)))
    if num_inf:
        raise DataError(
            f"{num_inf} of the {len(s)} scores are infinite; ROC curves need finite scores, so clip "
            "them (np.clip) or drop those jets."
        )
    if sample_weight is None:
        return y, s, None
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.shape != y.shape or not np.all(np.isfinite(w)):
        raise DataError(
            f"sample_weight must hold one finite weight per jet ({len(y)}), not an array of shape "
            f"{w.shape} with {int(np.count_nonzero(~np.isfinite(w)))} non-finite values."
        )
    for name, mask in (("signal", y), ("background", ~y)):
        if not w[mask].sum() > 0:
            raise DataError(
                f"the sample weights of the {name} jets sum to {w[mask].sum():g}; a ROC curve needs a "
                "positive total weight of each class."
            )
    return y, s, w


def roc_curve(
    labels: ArrayLike, scores: ArrayLike, sample_weight: ArrayLike | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray]:
    """The ROC curve of a tagger as (background efficiency, signal efficiency, thresholds).

    `labels`: 1 or `True` for signal jets, 0 or `False` for background jets; `scores`: larger = more
    signal-like; `sample_weight`: optional per-jet weights. Returns what `sklearn.metrics.roc_curve`
    returns, (fpr, tpr, thresholds), in decreasing order of the threshold: point i is the cut
    score >= thresholds[i], the first threshold is `inf` (no jet passes) and points on a straight line
    between two others are dropped. Raises `DataError` on labels other than 0/1, a missing class,
    NaN or infinite scores, or arrays of different lengths.
    """
    y, s, w = _check(labels, scores, sample_weight)
    return sklearn.metrics.roc_curve(_as_binary(y), _finite(s), sample_weight=w)


def auc(labels: ArrayLike, scores: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
    """Area under the ROC curve, as `sklearn.metrics.roc_auc_score` gives it (0.5: no separation).

    The probability that a random signal jet scores higher than a random background jet, ties
    counted 1/2. Arguments and errors as for `roc_curve`.
    """
    y, s, w = _check(labels, scores, sample_weight)
    if w is None:
        return rank_auc(y, s)
    return float(sklearn.metrics.auc(*_roc(y, s, sample_weight=w)))


def rejection(labels: ArrayLike, scores: ArrayLike, signal_efficiency: float = 0.5) -> Rejection:
    """Background rejection 1/eps_B at a signal efficiency, with its statistical uncertainty.

    eps_B is read off the ROC curve at `signal_efficiency` by linear interpolation between its two
    neighbouring points (the lowest eps_B where the curve runs at exactly that signal efficiency).
    The uncertainty is binomial in eps_B over the N_B background jets, propagated to 1/eps_B:

        sigma_eps = sqrt(eps_B * (1 - eps_B) / N_B)
        sigma_R = sigma_eps / eps_B ** 2

    It leaves out the fluctuation of the cut itself, which the finite number of signal jets causes and
    which matters when the signal sample is small. When no background jet passes, value and uncertainty
    are `math.inf`. `signal_efficiency` is a fraction in (0, 1]: 0.5 for
    Rej@50%. Arguments and errors otherwise as for `roc_curve`.
    """
    efficiency = float(signal_efficiency)
    if not 0 < efficiency <= 1:
        raise DataError(
            f"signal_efficiency must be a fraction in (0, 1], e.g. 0.5 for 50%, not {signal_efficiency}."
        )
    y, s, _ = _check(labels, scores)
    fpr, tpr = _roc(y, s)
    eps_b = float(background_efficiency(fpr, tpr, efficiency))
    num_bkg = int(np.count_nonzero(~y))
    value = _rejection(eps_b)
    if math.isinf(value):
        return Rejection(math.inf, math.inf, eps_b, num_bkg)
    sigma_eps = math.sqrt(eps_b * (1 - eps_b) / num_bkg)
    return Rejection(value, sigma_eps / eps_b**2, eps_b, num_bkg)
