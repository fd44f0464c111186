"""Two DDP processes on the CPU (gloo): batches are shared out, the metrics are those of all predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import uproot
from cluster_helpers import TINY, data_overrides
from helpers import run_cli
from sklearn.metrics import roc_auc_score


def read_predictions(path) -> dict:
    return uproot.open(path)["Events"].arrays(library="np")


@pytest.mark.slow
def test_ddp_two_processes_gather_all_test_jets(tiny_files, tmp_path):
    run_dir = tmp_path / "ddp"
    # 50 test jets in batches of 20: 3 batches, so one process scores its share plus a repeated batch
    result = run_cli("jettag-train", "trainer=ddp_cpu", "trainer.max_epochs=1", *TINY, "data.eval_batch_size=20",
                     "data.observers=[jet_pt,jet_eta]", *data_overrides(tiny_files), f"hydra.run.dir={run_dir}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    info = metrics["info"]
    assert info["processes"] == 2
    # 64 training jets in batches of 16 = 4 batches, 2 per process: 2 optimizer steps, not 4
    assert info["optimizer_steps"] == 2

    # every test jet scored exactly once: the (pt, eta) of the predictions are those of the file
    with uproot.open(tiny_files["test"]) as f:
        truth = f["tree"].arrays(["jet_pt", "jet_eta"], library="np")
    preds = read_predictions(run_dir / "predictions.root")
    assert metrics["num_jets"] == len(preds["jet_pt"]) == 50
    got = sorted(zip(preds["jet_pt"].tolist(), preds["jet_eta"].tolist(), strict=True))
    want = sorted(zip(truth["jet_pt"].tolist(), truth["jet_eta"].tolist(), strict=True))
    assert got == want

    # the AUC of the report is that of all 50 predictions together (scikit-learn)
    signal = preds["label_Tbqq"] == 1
    score = preds["score_label_Tbqq"] / (preds["score_label_Tbqq"] + preds["score_label_QCD"])
    assert metrics["auc"] == pytest.approx(roc_auc_score(signal, score), abs=1e-6)

    # one process scoring the same checkpoint gives the same score to every jet, so the same AUC
    result = run_cli("jettag-eval", f"run_dir={run_dir}", "trainer.accelerator=cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    single = read_predictions(run_dir / "eval" / "predictions.root")
    order, single_order = (
        np.lexsort((preds["jet_eta"], preds["jet_pt"])),
        np.lexsort((single["jet_eta"], single["jet_pt"])),
    )
    np.testing.assert_allclose(
        preds["score_label_Tbqq"][order], single["score_label_Tbqq"][single_order], atol=1e-5
    )
    single_metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert metrics["auc"] == pytest.approx(single_metrics["auc"], abs=1e-6)


@pytest.mark.parametrize("num_jets, batch_size, world", [(50, 20, 2), (64, 16, 2), (70, 8, 3), (10, 16, 4)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_batch_sampler_shards_equal_counts_covering_every_jet(
    num_jets, batch_size, world, shuffle, monkeypatch
):
    from jettag.data import dataset

    counts = np.random.default_rng(0).integers(1, 60, num_jets)
    shares = []
    for rank in range(world):
        monkeypatch.setattr(dataset, "torch_world", lambda rank=rank: (rank, world))
        sampler = dataset.JetBatchSampler(
            counts, batch_size, shuffle=shuffle, group_by_length=not shuffle, seed=3
        )
        sampler.set_epoch(2)
        shares.append(list(sampler))
        assert len(shares[-1]) == len(sampler)
    num_batches = -(-num_jets // batch_size)
    assert all(len(s) == -(-num_batches // world) for s in shares)  # DDP steps together
    jets = [j for share in shares for batch in share for j in batch]
    assert set(jets) == set(range(num_jets))  # every jet in some process's share
    # only whole repeated batches pad the shares, and only as many as needed for equal counts
    padded = -(-num_batches // world) * world - num_batches
    assert len(jets) - num_jets <= padded * batch_size
