"""One streamed training run with auto standardization, flat reweighting and a bad file skipped:
the fit lands in the run directory and the checkpoint, and jettag-eval standardizes with it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import run_cli, toy_jets, write_root

from jettag.inference import load_trained

FAST = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2",
        "trainer.accelerator=cpu", "trainer.precision=32-true", "data.batch_size=32"]  # fmt: skip


@pytest.mark.slow
def test_train_streaming_auto_fit_then_eval(toy_root_files, tmp_path):
    bad = {k: v for k, v in toy_jets(70, seed=9).items() if k != "part_charge"}  # kinpid needs part_charge
    bad_file = write_root(tmp_path / "bad.root", bad)
    run_dir = tmp_path / "run"
    result = run_cli(
        "jettag-train", "experiment=sample_part_small", *FAST,
        f"data.train_files=[{toy_root_files['train']},{bad_file}]", f"data.val_files=[{toy_root_files['val']}]",
        f"data.test_files=[{toy_root_files['test']}]", "data.streaming=true", "data.on_bad_file=skip",
        "data.standardization=auto", "data.fit_fraction=1",
        "data.reweight={mode:flat,variables:[jet_pt],bins:{jet_pt:[550,580,610,650]}}",
        f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    fit = json.loads((run_dir / "standardization.json").read_text())
    assert fit["fitted_on"]["jets"] == 600  # the whole good file (fit_fraction=1), the bad one skipped
    assert (run_dir / "reweighting.png").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    train = metrics["info"]["jets"]["train"]
    assert train["streamed"] and train["skipped"]["bad_file"] == 70
    # the checkpoint carries the fitted numbers: evaluation, prediction and export rebuild them
    features = load_trained(run_dir / "checkpoints" / "best.ckpt").features
    for feature in features.features:
        if feature.name in fit["features"]:
            assert feature.center == pytest.approx(fit["features"][feature.name]["center"])
            assert feature.scale == pytest.approx(fit["features"][feature.name]["scale"])
    assert not features.needs_fit and features.features[0].center != 1.7  # not the fixed kinpid numbers
    result = run_cli("jettag-eval", f"run_dir={run_dir}", "trainer.accelerator=cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert np.isclose(evaluated["auc"], metrics["auc"], atol=1e-6)  # same inputs, same model: same scores
