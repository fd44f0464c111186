"""Hydra sweeps: an Optuna search (hparams_search=...) maximizing the validation AUC, and MLflow logging."""

from __future__ import annotations

import json

import pytest
import yaml
from cluster_helpers import TINY, data_overrides
from helpers import run_cli

from jettag.paths import config_dir


@pytest.mark.slow
def test_optuna_search_reports_the_best_validation_auc(tiny_files, tmp_path):
    sweep = tmp_path / "optuna"
    result = run_cli("jettag-train", "-m", "hparams_search=part_small_optuna", "hydra.sweeper.n_trials=2",
                     "hydra.sweeper.sampler.n_startup_trials=2", f"hydra.sweep.dir={sweep}", "trainer.max_epochs=1",
                     *TINY, *data_overrides(tiny_files))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [json.loads((sweep / str(i) / "metrics.json").read_text()) for i in range(2)]
    configs = [yaml.safe_load((sweep / str(i) / ".hydra" / "config.yaml").read_text()) for i in range(2)]
    lrs = [c["task"]["optimizer"]["lr"] for c in configs]
    assert lrs[0] != lrs[1] and all(1e-4 <= lr <= 5e-3 for lr in lrs)  # drawn by Optuna in the range
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    # the objective of each trial is the run's best validation AUC: Optuna's best is the larger one
    assert best["best_value"] == pytest.approx(max(r["info"]["best_val_auc"] for r in runs))


def test_rej50_search_selects_checkpoints_by_val_rej50():
    text = (config_dir() / "hparams_search" / "part_small_optuna_rej50.yaml").read_text()
    assert yaml.safe_load(text)["callbacks"]["model_checkpoint"]["monitor"] == "val/rej50"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # SQLAlchemy, inside MLflow
def test_mlflow_logger(tiny_files, tmp_path):
    mlflow = pytest.importorskip("mlflow")
    run_dir, tracking = tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_cli("jettag-train", "logger=mlflow", f"logger.mlflow.tracking_uri={tracking}", "trainer.max_epochs=1",
                     "trainer.limit_train_batches=1", "test=false", *TINY, *data_overrides(tiny_files),
                     f"hydra.run.dir={run_dir}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow.tracking.MlflowClient(tracking)
    (run,) = client.search_runs([client.get_experiment_by_name("jettag").experiment_id])
    # the same validation AUC as in the CSV log of the run
    csv_auc = [line.split(",") for line in (run_dir / "csv" / "metrics.csv").read_text().splitlines()]
    column = csv_auc[0].index("val/auc")
    (value,) = [float(row[column]) for row in csv_auc[1:] if row[column]]
    assert run.data.metrics["val/auc"] == pytest.approx(value)
    assert list((run_dir / "tensorboard").glob("events.*"))
