"""Metrics against scikit-learn, hand-worked values and brute-force counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from jettag.errors import DataError
from jettag.evaluation import background_rejection, binary_metrics, compute_metrics, rank_auc, rejection_key


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def toy_multiclass(n: int, num_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    logits = rng.normal(0, 1, (n, num_classes))
    logits[np.arange(n), labels] += 1.5
    return labels, softmax(logits)


def brute_force_eps_b(sig: np.ndarray, bkg: np.ndarray, num_pass: int) -> float:
    """Fraction of background at or above the threshold that keeps the `num_pass` highest signal scores."""
    threshold = np.sort(sig)[::-1][num_pass - 1]
    return np.count_nonzero(bkg >= threshold) / len(bkg)


# Signal scores 0.9 0.6 0.6 0.4; background 0.8 0.6 0.3 0.2 0.1 (4 signal, 5 background jets).
# Cutting at decreasing thresholds gives the ROC points (eps_S, eps_B):
#   >= 0.9: (1/4, 0)   >= 0.8: (1/4, 1/5)   >= 0.6: (3/4, 2/5)   >= 0.4: (1, 2/5)   ...   (1, 1)
# eps_S = 50%: halfway along (1/4, 1/5) -> (3/4, 2/5): eps_B = 0.2 + 0.5 * 0.2 = 0.3 -> rejection 10/3.
# eps_S = 30%: (0.30 - 0.25) / 0.5 = 0.1 of the way: eps_B = 0.2 + 0.1 * 0.2 = 0.22 -> rejection 1/0.22.
# eps_S = 25%: the first point with eps_S = 1/4 has eps_B = 0 -> infinite rejection.
# eps_S = 100%: the first point with eps_S = 1 has eps_B = 2/5 -> rejection 2.5.
HAND_SIG = [0.9, 0.6, 0.6, 0.4]
HAND_BKG = [0.8, 0.6, 0.3, 0.2, 0.1]
HAND_Y = np.array([1] * 4 + [0] * 5)
HAND_SCORE = np.array(HAND_SIG + HAND_BKG)


@pytest.mark.parametrize(
    ("efficiency", "expected"), [(0.5, 10 / 3), (0.3, 1 / 0.22), (0.25, math.inf), (1.0, 2.5)]
)
def test_rejection_hand_worked(efficiency, expected):
    assert background_rejection(HAND_Y, HAND_SCORE, efficiency) == pytest.approx(expected, rel=1e-12)


def test_rejection_hand_worked_weighted():
    # doubling the weight of the 0.8 background jet: total background weight 6, ROC points
    # (1/4, 2/6) -> (3/4, 3/6) at the 0.6 threshold, so eps_B(50%) = 2/6 + 0.5 * 1/6 = 5/12
    weight = np.array([1, 1, 1, 1, 2, 1, 1, 1, 1], dtype=float)
    assert background_rejection(HAND_Y, HAND_SCORE, 0.5, sample_weight=weight) == pytest.approx(12 / 5)


def test_binary_metrics_hand_worked_and_keys():
    metrics = binary_metrics(HAND_Y, HAND_SCORE, efficiencies=(0.5, 0.3, 0.995))
    assert set(metrics) == {"auc", "rej50", "rej30", "rej995"}
    # AUC = P(s_sig > s_bkg) + P(tie) / 2 over the 20 pairs: 0.9 beats 5, 0.6 beats 3 and ties 1 (x2),
    # 0.4 beats 3: (5 + 2 * 3.5 + 3) / 20
    assert metrics["auc"] == pytest.approx(15 / 20)
    assert metrics["rej50"] == pytest.approx(10 / 3)


def test_rejection_key():
    assert [rejection_key(e) for e in (0.5, 0.3, 0.99, 0.995, 0.05)] == [
        "rej50",
        "rej30",
        "rej99",
        "rej995",
        "rej5",
    ]


def test_rejection_matches_brute_force_count():
    rng = np.random.default_rng(1)
    # 1000 signal jets: exactly 500 pass at 50%, a ROC point, so no interpolation is involved
    sig, bkg = rng.normal(1.5, 1, 1000), rng.normal(0, 1, 4000)
    y, score = np.r_[np.ones(1000), np.zeros(4000)], np.r_[sig, bkg]
    for efficiency, num_pass in ((0.5, 500), (0.3, 300)):
        expected = 1 / brute_force_eps_b(sig, bkg, num_pass)
        assert background_rejection(y, score, efficiency) == pytest.approx(expected, rel=1e-12)

    # 1001 signal jets: 50% means 500.5 jets, between the working points keeping 500 and 501. Without
    # ties the curve runs from (500/1001, lo) through the background jets between the two thresholds
    # to (500/1001, hi), then flat to (501/1001, hi): the interpolated eps_B is hi.
    sig = rng.normal(1.5, 1, 1001)
    y, score = np.r_[np.ones(1001), np.zeros(4000)], np.r_[sig, bkg]
    lo, hi = brute_force_eps_b(sig, bkg, 500), brute_force_eps_b(sig, bkg, 501)
    assert lo < hi  # the seed puts background jets between the two thresholds
    assert background_rejection(y, score, 0.5) == pytest.approx(1 / hi, rel=1e-12)


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 3000)
    score = np.round(rng.normal(y * 0.8, 1), 1)  # coarse scores: many ties
    assert binary_metrics(y, score)["auc"] == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert rank_auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert rank_auc(HAND_Y, HAND_SCORE) == pytest.approx(15 / 20)


def test_binary_compute_metrics_against_sklearn_and_hand_count():
    # 6 jets, background = class 1 here, so the signal is class 0
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3], [0.2, 0.8], [0.55, 0.45], [0.1, 0.9]])
    metrics = compute_metrics(labels, scores, ["top", "qcd"], background=1)
    assert metrics["accuracy"] == pytest.approx(4 / 6)  # argmax right for jets 0, 2, 3, 5
    assert metrics["signal"] == "top" and metrics["background"] == "qcd"
    assert metrics["num_jets"] == 6 and metrics["num_jets_per_class"] == {"top": 3, "qcd": 3}
    assert metrics["auc"] == pytest.approx(roc_auc_score(labels == 0, scores[:, 0]))
    # signal ranks 0.9, 0.7 above every background jet: eps_S = 2/3 at eps_B = 0, so Rej@50% is infinite
    assert metrics["rej50"] == math.inf and metrics["rej30"] == math.inf


def test_binary_score_keeps_float32_precision():
    # float32 softmax saturates s_sig at 1.0 for confident jets; the order survives in s_bkg
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 4000)
    logit = rng.normal(np.where(labels == 1, 20.0, 12.0), 4.0)
    s_sig = (1 / (1 + np.exp(-logit))).astype(np.float32)
    s_bkg = (1 / (1 + np.exp(logit))).astype(np.float32)
    assert np.count_nonzero(s_sig == 1) > 1000
    metrics = compute_metrics(labels, np.stack([s_bkg, s_sig], axis=1), ["qcd", "top"])
    expected = roc_auc_score(labels, -s_bkg.astype(np.float64))
    assert metrics["auc"] == pytest.approx(expected, abs=1e-12)
    assert metrics["auc"] > roc_auc_score(labels, s_sig)  # the float32 ratio itself would lose ranking


def test_accuracy_hand_count():
    labels = np.array([0, 1, 2, 2, 1])
    scores = np.array([
        [0.7, 0.2, 0.1],  # 0: right
        [0.5, 0.3, 0.2],  # 1: wrong
        [0.1, 0.1, 0.8],  # 2: right
        [0.2, 0.5, 0.3],  # 2: wrong
        [0.1, 0.6, 0.3],  # 1: right
    ])  # fmt: skip
    assert compute_metrics(labels, scores, ["a", "b", "c"])["accuracy"] == pytest.approx(3 / 5)


NAMES = ["label_QCD", "label_Hqql", "label_Tbl", "label_Tbqq"]


@pytest.fixture(scope="module")
def multiclass():
    labels, scores = toy_multiclass(6000, 4, seed=4)
    return labels, scores, compute_metrics(labels, scores, NAMES, background=0)


def test_macro_auc_matches_sklearn(multiclass):
    labels, scores, metrics = multiclass
    expected = roc_auc_score(labels, scores, multi_class="ovr", average="macro")
    assert metrics["auc"] == pytest.approx(expected, abs=1e-12)


def test_per_class_against_sklearn_on_subset(multiclass):
    labels, scores, metrics = multiclass
    assert set(metrics["per_class"]) == {"label_Hqql", "label_Tbl", "label_Tbqq"}
    for cls, name in enumerate(NAMES[1:], start=1):
        rows = [i for i in range(len(labels)) if labels[i] in (0, cls)]
        y = np.array([labels[i] == cls for i in rows])
        score = np.array([scores[i, cls] / (scores[i, cls] + scores[i, 0]) for i in rows])
        result = metrics["per_class"][name]
        assert result["num_jets"] == np.count_nonzero(labels == cls)
        assert result["auc"] == pytest.approx(roc_auc_score(y, score), abs=1e-12)
        sig, bkg = score[y], score[~y]
        lo = brute_force_eps_b(sig, bkg, math.floor(0.5 * len(sig)))
        hi = brute_force_eps_b(sig, bkg, math.ceil(0.5 * len(sig)))
        assert lo - 1e-12 <= 1 / result["rej50"] <= hi + 1e-12
    assert set(metrics["per_class"]["label_Hqql"]) == {"auc", "rej50", "rej30", "rej99", "num_jets"}
    assert set(metrics["per_class"]["label_Tbl"]) == {"auc", "rej50", "rej30", "rej995", "num_jets"}
    assert set(metrics["per_class"]["label_Tbqq"]) == {"auc", "rej50", "rej30", "num_jets"}


def test_multiclass_top_level_rejection_is_any_signal(multiclass):
    labels, scores, metrics = multiclass
    score = 1 - scores[:, 0]
    sig, bkg = score[labels != 0], score[labels == 0]
    lo = brute_force_eps_b(sig, bkg, math.floor(0.3 * len(sig)))
    hi = brute_force_eps_b(sig, bkg, math.ceil(0.3 * len(sig)))
    assert lo - 1e-12 <= 1 / metrics["rej30"] <= hi + 1e-12
    assert metrics["accuracy"] == pytest.approx(np.mean(scores.argmax(axis=1) == labels))
    assert metrics["num_jets_per_class"] == {n: int(np.sum(labels == i)) for i, n in enumerate(NAMES)}


def test_missing_class_raises_data_error():
    labels, scores = toy_multiclass(200, 4, seed=5)
    keep = labels != 0
    with pytest.raises(DataError, match="no jets of class label_QCD"):
        compute_metrics(labels[keep], scores[keep], NAMES, background=0)
    keep = labels != 2
    with pytest.raises(DataError, match="no jets of class label_Tbl"):
        compute_metrics(labels[keep], scores[keep], NAMES, background=0)
    y = np.zeros(10, dtype=int)
    with pytest.raises(DataError, match="no jets of class top"):
        compute_metrics(y, np.full((10, 2), 0.5), ["qcd", "top"])
    with pytest.raises(DataError, match="no signal"):
        background_rejection(y, np.linspace(0, 1, 10), 0.5)


def test_non_finite_scores_raise_data_error():
    labels, scores = toy_multiclass(100, 3, seed=6)
    scores[7, 1] = np.nan
    with pytest.raises(DataError, match="NaN or infinite for 1 of the 100 test jets"):
        compute_metrics(labels, scores, ["a", "b", "c"])
    with pytest.raises(DataError, match="NaN or inf"):
        binary_metrics(np.r_[0, 1, 1], np.r_[0.1, np.inf, 0.3])


def test_invalid_inputs():
    labels, scores = toy_multiclass(50, 3, seed=7)
    with pytest.raises(DataError, match=r"outside 0\.\.2"):
        compute_metrics(np.r_[labels[:-1], 3], scores, ["a", "b", "c"])
    with pytest.raises(ValueError, match="probabilities"):
        compute_metrics(labels, np.log(scores), ["a", "b", "c"])
    with pytest.raises(ValueError, match="3 columns"):
        compute_metrics(labels, scores, ["a", "b"])
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        background_rejection(HAND_Y, HAND_SCORE, 0.0)
