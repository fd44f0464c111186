"""Smoke runs of the pretraining and fine-tuning experiments through jettag-train on toy files:
pretrain_mpm writes a checkpoint, finetune_part starts from it (the backbone's tensors, checked
against the checkpoint) and writes the full report; pretrain_supervised composes as expected."""

from __future__ import annotations

import pytest
import torch
from helpers import JETCLASS_LABELS, run_cli, toy_jets, write_root
from hydra import compose, initialize_config_dir
from test_train_eval import FAST, check_run, files_overrides

from jettag.cli import register_resolvers
from jettag.paths import config_dir

TOP = ["data.labels=[label_QCD,label_Tbqq]", "features.max_particles=32"]


@pytest.mark.slow
def test_pretrain_mpm_then_finetune_part(toy_root_files, tmp_path):
    pre = tmp_path / "pre"
    # self-supervised pretraining reads files that carry no label branches at all
    files = {}
    for i, split in enumerate(("train", "val")):
        jets = {k: v for k, v in toy_jets(120, seed=80 + i).items() if not k.startswith("label")}
        files[split] = write_root(tmp_path / f"unlabelled_{split}.root", jets)
    result = run_cli("jettag-train", "experiment=pretrain_mpm", *files_overrides(files), "features.max_particles=32",
                     *FAST, "trainer.limit_val_batches=2", f"hydra.run.dir={pre}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    # a classifier cannot train on them: one sentence naming data.labels
    result = run_cli("jettag-train", *files_overrides({**files, "test": files["val"]}), "data.labels=null", *FAST,
                     f"hydra.run.dir={tmp_path / 'cls'}")  # fmt: skip
    assert result.returncode == 2 and "data.labels is null" in result.stderr, result.stderr[-2000:]
    checkpoint = pre / "checkpoints" / "best.ckpt"
    assert checkpoint.is_file() and not (pre / "metrics.json").exists()  # nothing to test
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    assert any(k.startswith("decoder.") for k in state) and "mask_value" in state

    run = tmp_path / "ft"
    result = run_cli("jettag-train", "experiment=finetune_part", f"task.backbone={checkpoint}",
                     "task.freeze_backbone=true", *files_overrides(toy_root_files), *TOP, *FAST,
                     f"hydra.run.dir={run}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    check_run(run, ["label_QCD", "label_Tbqq"])
    # a linear probe: after its training steps the backbone is still the pretrained one, bit for bit
    tuned = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)[
        "state_dict"
    ]
    backbone = [k for k in state if k.startswith("model.") and not k.startswith("model.head.")]
    assert backbone and [k for k in backbone if not torch.equal(tuned[k], state[k])] == []
    assert tuned["model.head.weight"].shape == (2, 64)


def test_pretrain_supervised_and_finetune_compose():
    register_resolvers()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        sup = compose("train", overrides=["experiment=pretrain_supervised"])
        ft = compose("train", overrides=["experiment=finetune_part", "task.freeze_backbone=true"])
    assert sup.task._target_ == "jettag.tasks.JetClassifier" and sup.model.num_layers == 4
    # jettag-generate --classes all: the ten JetClass labels in JetClass order
    assert list(sup.data.labels) == JETCLASS_LABELS
    assert ft.task._target_ == "jettag.tasks.FineTuner"
    assert (ft.task.optimizer.lr, ft.task.head_lr_factor, ft.task.scheduler) == (1e-4, 50, None)
    assert ft.task.freeze_backbone is True and list(ft.data.labels) == ["label_QCD", "label_Tbqq"]
