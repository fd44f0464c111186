"""write_report and the predictions file, read back with json, uproot and scikit-learn."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import uproot
from sklearn.metrics import roc_auc_score

from jettag.errors import DataError
from jettag.evaluation import write_predictions_root, write_report

REPORT_FILES = [
    "metrics.json",
    "report.md",
    "rejection.png",
    "rejection.pdf",
    "scores.png",
    "predictions.root",
]
METRIC_KEYS = {
    "accuracy",
    "auc",
    "rej50",
    "rej30",
    "num_jets",
    "class_names",
    "background",
    "num_jets_per_class",
}


def toy_set(n: int, class_names: list[str], seed: int):
    """Labels, float32 softmax scores, one-hot truth branches and observers of `n` toy jets."""
    rng = np.random.default_rng(seed)
    k = len(class_names)
    labels = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), labels] += 1.5
    scores = np.exp(logits)
    scores = (scores / scores.sum(axis=1, keepdims=True)).astype(np.float32)
    truth = {name: (labels == i).astype(np.int32) for i, name in enumerate(class_names)}
    observers = {
        "jet_pt": rng.uniform(500, 1000, n).astype(np.float32),
        "jet_eta": rng.uniform(-2, 2, n).astype(np.float32),
        "jet_nparticles": rng.integers(10, 120, n).astype(np.int32),
    }
    return labels, scores, truth, observers


def strict_json(path):
    def reject(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    with open(path) as f:
        return json.load(f, parse_constant=reject)


def read_predictions(path) -> dict[str, np.ndarray]:
    with uproot.open(path) as f:
        tree = f["Events"]
        return {name: tree[name].array(library="np") for name in tree.keys()}


def check_predictions(arrays, scores, class_names, truth, observers):
    expected = [f"score_{n}" for n in class_names] + list(truth) + list(observers)
    assert list(arrays) == expected
    for i, name in enumerate(class_names):
        assert arrays[f"score_{name}"].dtype == np.float32
        np.testing.assert_array_equal(arrays[f"score_{name}"], scores[:, i].astype(np.float32))
    for name, values in {**truth, **observers}.items():
        assert arrays[name].dtype == values.dtype
        np.testing.assert_array_equal(arrays[name], values)


def test_binary_report(tmp_path):
    names = ["label_QCD", "label_Tbqq"]
    labels, scores, truth, observers = toy_set(500, names, seed=0)
    info = {
        "model": "ParticleTransformer",
        "parameters": np.int64(2_140_000),
        "epochs": 3,
        "test_files": ["a.root", "b.root"],
        "jets": {"test": {"jets": 500, "skipped": {"empty": 2}}},
    }
    returned = write_report(tmp_path / "eval", labels, scores, names, truth, observers, info=info)

    out = tmp_path / "eval"
    for name in REPORT_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    metrics = strict_json(out / "metrics.json")
    assert METRIC_KEYS | {"info", "nonfinite_values"} <= set(metrics)
    assert metrics["info"]["parameters"] == 2_140_000
    assert metrics["info"]["jets"]["test"]["skipped"] == {"empty": 2}
    assert metrics["auc"] == pytest.approx(returned["auc"], abs=1e-15)
    assert metrics["num_jets"] == 500 and metrics["background"] == "label_QCD"

    arrays = read_predictions(out / "predictions.root")
    check_predictions(arrays, scores, names, truth, observers)
    # AUC from the file alone: the signal discriminant s_sig / (s_sig + s_bkg) against the truth branch
    s_sig = arrays["score_label_Tbqq"].astype(np.float64)
    s_bkg = arrays["score_label_QCD"].astype(np.float64)
    expected = roc_auc_score(arrays["label_Tbqq"], s_sig / (s_sig + s_bkg))
    assert metrics["auc"] == pytest.approx(expected, abs=1e-9)
    assert metrics["accuracy"] == pytest.approx(np.mean((s_sig > s_bkg) == (arrays["label_Tbqq"] == 1)))

    report = (out / "report.md").read_text()
    assert report.startswith("# jettag evaluation")
    texts = ["Rej@50%", "Rej@30%", f"{metrics['auc']:.4f}", "](rejection.png)", "](scores.png)"]
    for text in [*texts, "ParticleTransformer", "`label_Tbqq`"]:
        assert text in report, text


def test_multiclass_report(tmp_path):
    names = ["label_QCD", "label_Hqql", "label_Tbl", "label_Tbqq"]
    labels, scores, truth, observers = toy_set(800, names, seed=1)
    write_report(tmp_path, labels, scores, names, truth, observers, background=0, title="ParT on toys")

    metrics = strict_json(tmp_path / "metrics.json")
    assert METRIC_KEYS | {"per_class", "info"} <= set(metrics)
    assert set(metrics["per_class"]) == {"label_Hqql", "label_Tbl", "label_Tbqq"}
    assert "rej99" in metrics["per_class"]["label_Hqql"] and "rej995" in metrics["per_class"]["label_Tbl"]

    arrays = read_predictions(tmp_path / "predictions.root")
    check_predictions(arrays, scores, names, truth, observers)
    file_scores = np.stack([arrays[f"score_{n}"] for n in names], axis=1).astype(np.float64)
    file_labels = np.stack([arrays[n] for n in names], axis=1).argmax(axis=1)
    probabilities = file_scores / file_scores.sum(axis=1, keepdims=True)
    macro = roc_auc_score(file_labels, probabilities, multi_class="ovr", average="macro")
    assert metrics["auc"] == pytest.approx(macro, abs=1e-9)
    pair = (arrays["label_Tbqq"] == 1) | (arrays["label_QCD"] == 1)
    s_x, s_qcd = file_scores[pair, 3], file_scores[pair, 0]
    expected = roc_auc_score(arrays["label_Tbqq"][pair], s_x / (s_x + s_qcd))
    assert metrics["per_class"]["label_Tbqq"]["auc"] == pytest.approx(expected, abs=1e-9)

    report = (tmp_path / "report.md").read_text()
    assert report.startswith("# ParT on toys")
    for text in ("Rej@99%", "Rej@99.5%", "`label_Hqql`", "`label_Tbl`", "`label_Tbqq`", "(rejection.pdf)"):
        assert text in report, text


def test_infinite_rejection_is_strict_json(tmp_path):
    # perfectly separated classes: no background jet passes at 30% or 50% signal efficiency
    labels = np.array([0] * 20 + [1] * 20)
    scores = np.zeros((40, 2), dtype=np.float32)
    scores[:20] = [0.9, 0.1]
    scores[20:] = [0.2, 0.8]
    returned = write_report(tmp_path, labels, scores, ["qcd", "top"], {"label": labels}, {})
    assert returned["rej50"] == np.inf
    metrics = strict_json(tmp_path / "metrics.json")
    assert metrics["rej50"] is None and metrics["rej30"] is None
    assert metrics["nonfinite_values"] == {"rej50": "inf", "rej30": "inf"}
    assert metrics["auc"] == 1.0
    assert "> 20" in (tmp_path / "report.md").read_text()


def test_missing_class_raises_before_writing(tmp_path):
    names = ["label_QCD", "label_Hbb", "label_Tbqq"]
    labels, scores, _, _ = toy_set(100, names, seed=2)
    keep = labels != 0
    with pytest.raises(DataError, match="no jets of class label_QCD"):
        write_report(tmp_path / "eval", labels[keep], scores[keep], names, {}, {}, background=0)
    assert not (tmp_path / "eval").exists()


def test_predictions_branch_checks(tmp_path):
    scores = np.full((3, 2), 0.5, dtype=np.float32)
    with pytest.raises(ValueError, match="'score_a' twice"):
        write_predictions_root(tmp_path / "p.root", scores, ["a", "b"], {}, {"score_a": np.zeros(3)})
    with pytest.raises(ValueError, match="one value per jet"):
        write_predictions_root(tmp_path / "p.root", scores, ["a", "b"], {"label": np.zeros(4)}, {})


def test_report_states_how_many_background_jets_a_rejection_rests_on():
    from jettag.evaluation.report import _rejection_statistics

    # 100 background jets, Rej@50% = 25: 4 jets pass, relative uncertainty 1/sqrt(4) = 50%
    line = _rejection_statistics({"rej50": 25.0, "rej30": math.inf}, ["rej50", "rej30"], 100)
    assert "Rej@50%: 4.0 background jets pass (relative uncertainty ~50%)" in line
    assert "Rej@30%: no background jet passes" in line and "of 100 background jets" in line
