"""jettag-report over a 2-model x 3-seed sweep: the table's means and spreads are those of the runs'
metrics.json files, computed here with numpy (sample standard deviation, ddof=1)."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
import uproot
import yaml
from helpers import run_cli

BINARY = ["label_QCD", "label_Tbqq"]
MULTI = ["label_QCD", "label_Hbb", "label_Tbl"]


def write_run(run_dir, model: str, seed: int, metrics: dict, class_names, rng, overrides=()):
    """A run directory as jettag-train leaves it: metrics.json, predictions.root, .hydra/."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "hydra.yaml").write_text(
        yaml.safe_dump({"hydra": {"runtime": {"choices": {"model": model}}}})
    )
    (run_dir / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump([f"model={model}", f"seed={seed}", *overrides, f"hydra.run.dir={run_dir}"])
    )
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    labels = rng.integers(0, len(class_names), 200)
    logits = rng.normal(size=(200, len(class_names))) + 2.0 * np.eye(len(class_names))[labels]
    scores = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    branches = {f"score_{n}": scores[:, i].astype(np.float32) for i, n in enumerate(class_names)}
    branches |= {n: (labels == i).astype(np.int32) for i, n in enumerate(class_names)}
    with uproot.recreate(run_dir / "predictions.root") as f:
        f["Events"] = branches


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """multirun/<n>/ of 2 models x 3 seeds (top vs QCD), and 2 seeds of one model on 3 classes."""
    base = tmp_path_factory.mktemp("sweep")
    rng = np.random.default_rng(5)
    expected: dict[tuple[str, str], list[dict]] = {}
    job = 0
    for model, params in (("part_small", 290742), ("pfn", 86154)):
        for seed in (1, 2, 3):
            m = {"accuracy": rng.uniform(0.9, 0.95), "auc": rng.uniform(0.97, 0.99),
                 "rej50": rng.uniform(100, 400), "rej30": rng.uniform(500, 1500),
                 "class_names": BINARY, "background": "label_QCD", "signal": "label_Tbqq",
                 "info": {"model": "ParticleTransformer", "parameters": params}}  # fmt: skip
            write_run(base / "multirun" / str(job), model, seed, m, BINARY, rng, ["trainer.max_epochs=2"])
            (base / "multirun" / str(job) / "eval").mkdir()  # a re-evaluation is not another run
            (base / "multirun" / str(job) / "eval" / "metrics.json").write_text(json.dumps({**m, "auc": 0.5}))
            expected.setdefault(("top", model), []).append(m)
            job += 1
    for seed in (1, 2):
        per_class = {"label_Hbb": {"auc": 0.99, "rej50": rng.uniform(500, 900), "rej30": 1000.0},
                     "label_Tbl": {"auc": 0.99, "rej50": 300.0, "rej30": 900.0, "rej995": rng.uniform(50, 90)}}  # fmt: skip
        m = {"accuracy": rng.uniform(0.8, 0.9), "auc": rng.uniform(0.97, 0.99), "rej50": None, "rej30": 5000.0,
             "class_names": MULTI, "background": "label_QCD", "per_class": per_class,
             "nonfinite_values": {"rej50": "inf"} if seed == 1 else {}, "info": {"parameters": 2143486}}  # fmt: skip
        if seed == 2:
            m["rej50"] = 4000.0
        write_run(base / "jetclass" / f"seed{seed}", "part", seed, m, MULTI, rng)
        expected.setdefault(("multi", "part"), []).append(m)
    return base, expected


def mean_std(values) -> tuple[float, float]:
    values = np.array(values, dtype=float)
    return values.mean(), np.sqrt(((values - values.mean()) ** 2).sum() / (len(values) - 1))


def test_report_table_matches_numpy(sweep, tmp_path):
    base, expected = sweep
    out = tmp_path / "tables"
    result = run_cli("jettag-report", str(base / "multirun"), str(base / "jetclass"), "-o", str(out))
    assert result.returncode == 0, result.stderr[-3000:]

    rows = list(csv.DictReader(open(out / "comparison.csv")))
    top = {r["model"]: r for r in rows if r["task"] == "label_Tbqq vs label_QCD"}
    assert set(top) == {"part_small", "pfn"}  # trainer.max_epochs=2 is the same everywhere: no extra column
    for model, row in top.items():
        runs = expected[("top", model)]
        assert row["runs"] == "3"
        for key in ("accuracy", "auc", "rej50", "rej30"):
            mean, std = mean_std([m[key] for m in runs])
            assert float(row[f"{key}_mean"]) == pytest.approx(mean, rel=1e-12), (model, key)
            assert float(row[f"{key}_std"]) == pytest.approx(std, rel=1e-12), (model, key)
    assert top["pfn"]["parameters"] == "86154"

    (multi,) = [r for r in rows if r["task"] == "3 classes, background label_QCD"]
    runs = expected[("multi", "part")]
    assert float(multi["rej50_mean"]) == np.inf  # one seed had no background jet passing
    mean, std = mean_std([m["per_class"]["label_Hbb"]["rej50"] for m in runs])
    assert float(multi["per_class.label_Hbb.rej50_mean"]) == pytest.approx(mean)
    assert float(multi["per_class.label_Hbb.rej50_std"]) == pytest.approx(std)
    mean, _ = mean_std([m["per_class"]["label_Tbl"]["rej995"] for m in runs])  # the paper's t->blnu point
    assert float(multi["per_class.label_Tbl.rej995_mean"]) == pytest.approx(mean)

    md = (out / "comparison.md").read_text()
    auc_mean, auc_std = mean_std([m["auc"] for m in expected[("top", "pfn")]])
    assert re.search(rf"\| pfn \| 3 \| [^|]+ \| {auc_mean:.4f} ± {auc_std:.4f} \|", md)
    assert "| part | 2 |" in md and "86.2k" in md and "2.14M" in md and "label_Tbl Rej@99.5%" in md
    page = (out / "comparison.html").read_text()
    assert page.count("data:image/png;base64,") == 4  # rejection curves and scores for each task
    assert (out / "comparison_label_tbqq_vs_label_qcd_rejection.png").is_file()


def test_report_rows_per_swept_hyperparameter(tmp_path):
    rng = np.random.default_rng(0)
    for i, (lr, seed) in enumerate([(1e-3, 1), (1e-3, 2), (2e-3, 1), (2e-3, 2)]):
        m = {"accuracy": 0.9, "auc": 0.97 + i / 1000, "rej50": 100.0, "rej30": 500.0,
             "class_names": BINARY, "background": "label_QCD", "signal": "label_Tbqq"}  # fmt: skip
        write_run(tmp_path / str(i), "part_small", seed, m, BINARY, rng, [f"task.optimizer.lr={lr}"])
    result = run_cli("jettag-report", str(tmp_path), "--no-plots")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {r["model"]: r for r in csv.DictReader(open(tmp_path / "comparison.csv"))}
    assert set(rows) == {"part_small (task.optimizer.lr=0.001)", "part_small (task.optimizer.lr=0.002)"}
    assert float(rows["part_small (task.optimizer.lr=0.002)"]["auc_mean"]) == pytest.approx(0.9725)


def test_report_without_runs_says_so(tmp_path):
    result = run_cli("jettag-report", str(tmp_path))
    assert result.returncode == 2
    assert "no metrics.json under" in result.stderr and len(result.stderr.strip().splitlines()) == 1
