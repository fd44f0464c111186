"""One smoke training run per baseline model config, through jettag-train as a user runs it.

The shipped configs are used as they are (reference sizes); the runs are kept short by the data:
12 particles per jet, 2 training batches of 32. All four run in one Hydra multirun (`-m`), one
process, which saves the interpreter start-up per model and checks that sweeping over models works.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import uproot
from helpers import run_cli
from omegaconf import OmegaConf

MODELS = {  # config name -> class the run must have built
    "part_plain": "ParticleTransformer",
    "particlenet": "ParticleNet",
    "pfn": "ParticleFlowNetwork",
    "pcnn": "ParticleCNN",
}
FAST = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.accelerator=cpu",
        "trainer.precision=32-true", "data.batch_size=32", "features.max_particles=12"]  # fmt: skip


@pytest.fixture(scope="module")
def sweep(toy_root_files, tmp_path_factory):
    """Run directory of each model config, after one multirun over all of them."""
    sweep_dir = tmp_path_factory.mktemp("models_sweep")
    files = [f"data.{split}_files=[{path}]" for split, path in toy_root_files.items()]
    result = run_cli("jettag-train", "-m", f"model={','.join(MODELS)}", *files, *FAST,
                     f"hydra.sweep.dir={sweep_dir}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {}
    for run_dir in sweep_dir.iterdir():
        if (run_dir / ".hydra" / "overrides.yaml").is_file():
            overrides = OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")
            model = next(o.split("=", 1)[1] for o in overrides if o.startswith("model="))
            runs[model] = run_dir
    return runs


@pytest.mark.parametrize("name", list(MODELS))
def test_model_config_trains_and_reports(sweep, name):
    run_dir = sweep[name]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["info"]["model"] == MODELS[name]
    assert metrics["info"]["optimizer_steps"] == 2
    assert 0 <= metrics["auc"] <= 1
    arrays = uproot.open(run_dir / "predictions.root")["Events"].arrays(library="np")
    scores = np.stack([arrays["score_label_QCD"], arrays["score_label_Tbqq"]], axis=1)
    assert len(scores) == metrics["num_jets"] == 300
    assert np.isfinite(scores).all() and np.allclose(scores.sum(axis=1), 1, atol=1e-5)
    checkpoint = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    state = checkpoint["state_dict"]
    if name == "part_plain":  # ParT without the pair embedding
        assert not any(".pair_embed." in key for key in state) and any(".blocks." in key for key in state)
