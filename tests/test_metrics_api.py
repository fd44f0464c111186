"""The public metrics (jettag.metrics) against scikit-learn, values worked on paper and toy experiments.

Every expected number is computed here independently of jettag: by scikit-learn, by counting jets, or by
hand in the comments.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import sklearn.metrics

from jettag.errors import DataError
from jettag.metrics import Rejection, auc, rejection, roc_curve


def toy(num_signal: int, num_background: int, seed: int, decimals: int | None = None):
    """Gaussian scores, background at 0 and signal at 2 (unit width), labels 1 = signal, shuffled.

    With `decimals`, scores are rounded so that many jets share a score (ties)."""
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(num_signal, dtype=int), np.zeros(num_background, dtype=int)]
    scores = rng.normal(2.0 * labels, 1.0)
    if decimals is not None:
        scores = np.round(scores, decimals)
    order = rng.permutation(len(labels))
    return labels[order], scores[order]


def binomial_uncertainty(eps_b: float, num_background: int) -> float:
    """sigma(1/eps_B) = sqrt(eps_B (1 - eps_B) / N_B) / eps_B^2, written out again."""
    return math.sqrt(eps_b * (1 - eps_b) / num_background) / eps_b**2


# --------------------------------------------------------------------------- ROC curve and AUC


@pytest.mark.parametrize("decimals", [None, 1], ids=["distinct", "ties"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_roc_curve_and_auc_equal_sklearn(decimals, weighted):
    labels, scores = toy(1500, 2500, seed=7, decimals=decimals)
    if decimals is not None:
        assert len(np.unique(scores)) < len(scores) / 10  # the ties are there
    weights = np.random.default_rng(3).uniform(0.1, 2.0, len(labels)) if weighted else None
    expected = sklearn.metrics.roc_curve(labels, scores, sample_weight=weights)
    for given in (labels, labels.astype(bool), labels.astype(np.uint8)):
        got = roc_curve(given, scores, sample_weight=weights)
        assert len(got) == 3
        for g, e in zip(got, expected, strict=True):
            assert isinstance(g, np.ndarray)
            np.testing.assert_allclose(g, e, rtol=1e-12, atol=0)
        area = auc(given, scores, sample_weight=weights)
        assert isinstance(area, float)
        assert area == pytest.approx(
            sklearn.metrics.roc_auc_score(labels, scores, sample_weight=weights), rel=1e-10
        )
    assert 0.9 < area < 0.95  # two unit Gaussians 2 apart: Phi(2 / sqrt 2) = 0.921


def test_roc_curve_is_background_then_signal_efficiency():
    # signal 0.9, 0.4; background 0.6, 0.1: cutting at 0.9 keeps 1/2 of the signal and no background
    fpr, tpr, thresholds = roc_curve([1, 1, 0, 0], [0.9, 0.4, 0.6, 0.1])
    point = list(thresholds).index(0.9)
    assert (fpr[point], tpr[point]) == (0.0, 0.5)
    point = list(thresholds).index(0.6)
    assert (fpr[point], tpr[point]) == (0.5, 0.5)
    assert auc([1, 1, 0, 0], [0.9, 0.4, 0.6, 0.1]) == 0.75  # 3 of the 4 signal-background pairs ordered


# --------------------------------------------------------------------------- rejection by hand

# Signal scores 0.9 0.7 0.7 0.2; background 0.8 0.7 0.3 0.1 (4 + 4 jets, one three-way tie at 0.7).
# Cutting at decreasing thresholds gives the ROC points (eps_S, eps_B):
#   >= 0.9: (1/4, 0)  >= 0.8: (1/4, 1/4)  >= 0.7: (3/4, 2/4)  >= 0.3: (3/4, 3/4)  >= 0.2: (1, 3/4)
# eps_S = 50%: halfway along (1/4, 1/4) -> (3/4, 1/2), the diagonal the tie makes:
#   eps_B = 1/4 + (0.50 - 0.25) / 0.5 * 1/4 = 0.375, rejection 8/3.
# eps_S = 30%: a tenth of the way: eps_B = 0.25 + 0.1 * 0.25 = 0.275.
# eps_S = 75%: on the point (3/4, 1/2), the first of the two at eps_S = 3/4: rejection 2.
# eps_S = 100%: on (1, 3/4): rejection 4/3.
# eps_S = 25%: on (1/4, 0): no background jet passes, rejection infinite.
HAND_LABELS = np.array([1, 1, 1, 1, 0, 0, 0, 0])
HAND_SCORES = np.array([0.9, 0.7, 0.7, 0.2, 0.8, 0.7, 0.3, 0.1])


@pytest.mark.parametrize(("efficiency", "eps_b"), [(0.5, 0.375), (0.3, 0.275), (0.75, 0.5), (1.0, 0.75)])
def test_rejection_worked_by_hand(efficiency, eps_b):
    result = rejection(HAND_LABELS, HAND_SCORES, efficiency)
    assert result.background_efficiency == pytest.approx(eps_b, rel=1e-12)
    assert result.value == pytest.approx(1 / eps_b, rel=1e-12)
    assert result.background_jets == 4
    assert result.uncertainty == pytest.approx(binomial_uncertainty(eps_b, 4), rel=1e-12)


def test_rejection_hand_numbers_at_50_percent():
    result = rejection(HAND_LABELS.astype(bool), HAND_SCORES)  # default: eps_S = 0.5
    assert result.value == pytest.approx(8 / 3)
    # sqrt(0.375 * 0.625 / 4) = 0.24206; / 0.375^2 = 1.72133
    assert result.uncertainty == pytest.approx(1.72133, abs=1e-5)
    assert float(result) == result.value


def test_rejection_is_infinite_when_no_background_passes():
    result = rejection(HAND_LABELS, HAND_SCORES, 0.25)
    assert result.value == math.inf and result.uncertainty == math.inf
    assert result.background_efficiency == 0.0
    assert str(result) == "inf +- inf"
    # perfectly separated: no background above the lowest signal score, at any efficiency
    assert rejection([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1], 1.0).value == math.inf


def test_rejection_against_counting_on_a_large_sample():
    """Without ties, eps_B at eps_S is the fraction of background at or above the ceil(eps_S N_S)-th
    highest signal score: the curve runs at constant eps_B between the signal points."""
    labels, scores = toy(3001, 4000, seed=11)
    signal = np.sort(scores[labels == 1])[::-1]
    background = scores[labels == 0]
    for efficiency in (0.5, 0.3, 0.9, 0.123):
        rank = math.ceil(efficiency * len(signal) - 1e-9)
        eps_b = np.count_nonzero(background >= signal[rank - 1]) / len(background)
        result = rejection(labels, scores, efficiency)
        assert result.value == pytest.approx(1 / eps_b, rel=1e-12), efficiency
        assert result.uncertainty == pytest.approx(binomial_uncertainty(eps_b, 4000), rel=1e-12)


def test_rejection_uncertainty_matches_the_spread_of_toy_experiments():
    """The binomial uncertainty leaves out the fluctuation of the cut, which the signal jets set: with
    4x more signal than background jets it adds about 3% here, well inside the 20% allowed."""
    values, uncertainties = [], []
    for seed in range(200):
        labels, scores = toy(8000, 2000, seed=1000 + seed)
        result = rejection(labels, scores, 0.5)
        values.append(result.value)
        uncertainties.append(result.uncertainty)
    spread = np.std(values, ddof=1)
    # eps_B = P(z > 2) = 0.0228: rejection 44, binomial uncertainty sqrt(0.0228 * 0.977 / 2000) / eps_B^2 = 6.5
    assert np.mean(values) == pytest.approx(44, rel=0.1)
    assert np.mean(uncertainties) == pytest.approx(spread, rel=0.2)


def test_rejection_prints_value_and_uncertainty_rounded_alike():
    assert str(Rejection(41.83, 3.21, 1 / 41.83, 1000)) == "41.8 +- 3.2"
    assert str(Rejection(1253.4, 46.2, 1 / 1253.4, 10**6)) == "1253 +- 46"
    assert str(Rejection(1.2345, 0.0123, 1 / 1.2345, 10**6)) == "1.234 +- 0.012"
    with pytest.raises(AttributeError):
        Rejection(1.0, 0.0, 1.0, 1).value = 2.0  # frozen


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("labels", "scores", "word"),
    [
        ([1, 2, 0, 0], [0.1, 0.2, 0.3, 0.4], "booleans"),
        ([1.0, 1.0, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4], "booleans"),
        (["s", "s", "b", "b"], [0.1, 0.2, 0.3, 0.4], "booleans"),
        ([1, 1, 0], [0.1, 0.2, 0.3, 0.4], "one entry per jet"),
        ([[1, 0], [0, 1]], [0.1, 0.2], "1-D"),
        ([0, 0, 0, 0], [0.1, 0.2, 0.3, 0.4], "no signal"),
        ([True, True, True], [0.1, 0.2, 0.3], "no background"),
        ([], [], "no signal"),
        ([1, 1, 0, 0, 0], [0.1, np.nan, 0.3, np.nan, np.nan], "3 of the 5 scores are NaN"),
        ([1, 1, 0, 0], [0.1, np.inf, 0.3, 0.2], "infinite"),
    ],
)
@pytest.mark.parametrize("function", [roc_curve, auc, rejection])
def test_bad_input_raises_data_error(function, labels, scores, word):
    with pytest.raises(DataError, match=word) as error:
        function(np.asarray(labels), np.asarray(scores))
    message = str(error.value)
    assert "\n" not in message and message.endswith(".")


def test_nan_message_suggests_dropping_the_jets():
    with pytest.raises(DataError, match="drop"):
        auc([1, 0, 0], [np.nan, 0.1, 0.2])


@pytest.mark.parametrize("efficiency", [0, -0.5, 1.5, 50, math.nan])
def test_signal_efficiency_outside_zero_one_raises(efficiency):
    with pytest.raises(DataError, match=r"signal_efficiency .*\(0, 1\]"):
        rejection(HAND_LABELS, HAND_SCORES, efficiency)


@pytest.mark.parametrize(
    ("weights", "word"), [([1.0, 1.0, 1.0], "one finite weight"), ([1, 1, 0, 0], "background jets sum")]
)
@pytest.mark.parametrize("function", [roc_curve, auc])
def test_bad_sample_weight_raises(function, weights, word):
    with pytest.raises(DataError, match=word):
        function([1, 1, 0, 0], [0.9, 0.4, 0.6, 0.1], sample_weight=weights)
