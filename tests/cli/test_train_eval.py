"""One smoke run through jettag-train and jettag-eval per experiment config, on tiny toy files.

Each run must write the whole report; the AUC and Rej50 in metrics.json are recomputed here
independently (scikit-learn, numpy) from predictions.root.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import uproot
from helpers import JETCLASS_LABELS, run_cli
from sklearn.metrics import roc_auc_score, roc_curve

from jettag.paths import config_dir


def files_overrides(files: dict) -> list[str]:
    return [f"data.{split}_files=[{path}]" for split, path in files.items()]


FAST = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.accelerator=cpu",
        "trainer.precision=32-true", "data.batch_size=32"]  # fmt: skip


def check_run(run_dir: Path, class_names: list[str]) -> dict:
    for name in ("metrics.json", "report.md", "rejection.png", "predictions.root"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("accuracy", "auc", "rej50", "rej30"):
        assert key in metrics
    # JSON has no infinity: an infinite rejection (no background jet passes, easy on tiny toy files)
    # is stored as null and named under "nonfinite_values"
    for key, value in metrics.get("nonfinite_values", {}).items():
        if "." not in key and "[" not in key:
            assert metrics[key] is None
            metrics[key] = float(value)
    for key in ("accuracy", "auc", "rej50", "rej30"):
        assert metrics[key] is not None, key
    tree = uproot.open(run_dir / "predictions.root")["Events"]
    scores = np.stack([tree[f"score_{c}"].array(library="np") for c in class_names], axis=1)
    assert np.allclose(scores.sum(axis=1), 1, atol=1e-5)
    return metrics


def test_experiment_configs_are_all_covered():
    shipped = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))
    assert shipped == ["finetune_gradual", "finetune_part", "jetclass_part", "jetclass_part_plain", "jetclass_particlenet",
                       "jetclass_pcnn", "jetclass_pfn", "pretrain_cls_mpm", "pretrain_contrastive", "pretrain_mpm",
                       "pretrain_supervised", "sample_part_small", "study_finetune", "study_scratch",
                       "top_part"]  # fmt: skip


def test_sample_part_small_train_then_eval(toy_root_files, tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("jettag-train", "experiment=sample_part_small", *files_overrides(toy_root_files), *FAST,
                     "data.observers=[jet_pt,jet_mass]", f"hydra.run.dir={run_dir}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    classes = ["label_QCD", "label_Tbqq"]
    metrics = check_run(run_dir, classes)
    assert (run_dir / "checkpoints" / "best.ckpt").is_file() and (
        run_dir / "checkpoints" / "last.ckpt"
    ).is_file()
    assert (run_dir / "csv" / "metrics.csv").is_file() and (run_dir / ".hydra" / "config.yaml").is_file()
    info = metrics["info"]  # the resident memory after each training epoch (ResidentMemory)
    assert len(info["resident_mb_per_epoch"]) == info["epochs"] == 1 and info["peak_resident_mb"] > 100

    # AUC and Rej50 recomputed from the predictions file
    tree = uproot.open(run_dir / "predictions.root")["Events"]
    arrays = tree.arrays(library="np")
    assert {"score_label_QCD", "score_label_Tbqq", "label_QCD", "label_Tbqq", "jet_pt", "jet_mass"} <= set(
        arrays
    )
    signal = arrays["label_Tbqq"] == 1
    score = arrays["score_label_Tbqq"] / (arrays["score_label_Tbqq"] + arrays["score_label_QCD"])
    assert metrics["auc"] == pytest.approx(roc_auc_score(signal, score), abs=1e-6)
    fpr, tpr, _ = roc_curve(signal, score)
    with np.errstate(divide="ignore"):
        assert metrics["rej50"] == pytest.approx(1 / np.interp(0.5, tpr, fpr), rel=1e-6)
    with uproot.open(toy_root_files["test"]) as f:
        np.testing.assert_allclose(
            np.sort(arrays["jet_pt"]), np.sort(f["tree"]["jet_pt"].array(library="np"))
        )

    # jettag-eval on the run reproduces the test metrics from the saved best checkpoint
    result = run_cli("jettag-eval", f"run_dir={run_dir}", "trainer.accelerator=cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    again = check_run(run_dir / "eval", classes)
    assert again["auc"] == pytest.approx(metrics["auc"], abs=1e-6)


def test_top_part_on_parquet(toy_parquet_files, tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("jettag-train", "experiment=top_part", *files_overrides(toy_parquet_files), *FAST,
                     "trainer.limit_train_batches=1", f"hydra.run.dir={run_dir}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    check_run(run_dir, ["QCD", "Top"])
    arrays = uproot.open(run_dir / "predictions.root")["Events"].arrays(library="np")
    assert {"score_QCD", "score_Top", "label", "jet_mass"} <= set(arrays)


def test_jetclass_part_multiclass(toy_multiclass_files, tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("jettag-train", "experiment=jetclass_part", *files_overrides(toy_multiclass_files), *FAST,
                     "trainer.limit_train_batches=1", f"hydra.run.dir={run_dir}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    labels = ["label_QCD", "label_Hbb", "label_Hcc", "label_Hgg", "label_H4q",
              "label_Hqql", "label_Zqq", "label_Wqq", "label_Tbqq", "label_Tbl"]  # fmt: skip
    metrics = check_run(run_dir, labels)
    assert set(metrics["per_class"]) == set(labels[1:])
    # per-class rejection against QCD uses s_X / (s_X + s_QCD) on X and QCD jets only
    arrays = uproot.open(run_dir / "predictions.root")["Events"].arrays(library="np")
    for label in ("label_Hbb", "label_Tbqq"):
        keep = (arrays[label] == 1) | (arrays["label_QCD"] == 1)
        s = arrays[f"score_{label}"][keep] / (
            arrays[f"score_{label}"][keep] + arrays["score_label_QCD"][keep]
        )
        expected = roc_auc_score(arrays[label][keep] == 1, s)
        assert metrics["per_class"][label]["auc"] == pytest.approx(expected, abs=1e-6)


def test_jetclass_baseline_experiments(toy_multiclass_files, tmp_path):
    """The baselines' JetClass experiments, one multirun: each trains and writes per-class rejections."""
    names = {"jetclass_part_plain": "ParticleTransformer", "jetclass_particlenet": "ParticleNet",
             "jetclass_pfn": "ParticleFlowNetwork", "jetclass_pcnn": "ParticleCNN"}  # fmt: skip
    result = run_cli("jettag-train", "-m", f"experiment={','.join(names)}", *files_overrides(toy_multiclass_files),
                     *FAST, "trainer.limit_train_batches=1", "features.max_particles=16",
                     f"hydra.sweep.dir={tmp_path}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    seen = {}
    for run_dir in tmp_path.iterdir():
        if (run_dir / "metrics.json").is_file():
            metrics = json.loads((run_dir / "metrics.json").read_text())
            assert set(metrics["per_class"]) == set(JETCLASS_LABELS[1:])
            seen[metrics["info"]["model"]] = metrics["info"]["parameters"]
    assert sorted(seen) == sorted(set(names.values()))
