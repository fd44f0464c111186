"""Smoke runs of the pretraining and fine-tuning experiments through jettag-train on toy files:
pretrain_mpm writes a checkpoint, finetune_part starts from it (the backbone's tensors, checked
against the checkpoint) and writes the full report; pretrain_supervised composes as expected;
task=finetune runs for every model config from a checkpoint of it (one multirun)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import JETCLASS_LABELS, run_cli, toy_jets, write_root
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from test_train_eval import FAST, check_run, files_overrides
from torch import nn

from jettag.cli import register_resolvers
from jettag.paths import config_dir
from jettag.pipeline import build_model

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
    # jettag-eval evaluates classifiers: a checkpoint trained without labels is one sentence
    result = run_cli("jettag-eval", f"run_dir={pre}", "trainer.accelerator=cpu")
    assert result.returncode == 2 and "was trained on unlabelled jets" in result.stderr, result.stderr[-2000:]

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
        gradual = compose("train", overrides=["experiment=finetune_gradual", "model=particlenet"])
    assert sup.task._target_ == "jettag.tasks.JetClassifier" and sup.model.num_layers == 4
    # jettag-generate --classes all: the ten JetClass labels in JetClass order
    assert list(sup.data.labels) == JETCLASS_LABELS
    assert ft.task._target_ == "jettag.tasks.FineTuner"
    assert (ft.task.optimizer.lr, ft.task.head_lr_factor, ft.task.scheduler) == (1e-4, 50, None)
    assert ft.task.freeze_backbone is True and list(ft.data.labels) == ["label_QCD", "label_Tbqq"]
    assert ft.task.schedule.decay == "constant" and ft.task.schedule.freeze_steps == 0
    # the MPMv2-style schedule for any model
    assert gradual.model._target_ == "jettag.models.ParticleNet" and gradual.task.head_lr_factor == 1
    assert dict(gradual.task.schedule) == dict(freeze_steps=0.1, ramp_steps=0.1, warmup_steps=0.02,
                                               decay="cosine", final_factor=0.0)  # fmt: skip


FINETUNED = ["part", "part_plain", "particlenet", "pfn", "pcnn"]


def test_finetune_every_model_from_its_checkpoint(toy_root_files, tmp_path):
    """One multirun of task=finetune over the model configs, each from a checkpoint of that config
    (written here as jettag-train writes one, 10-class head, randomized batch-norm statistics): the
    backbone frozen for the first of the two steps, batch-norm statistics kept, a cosine decay."""
    register_resolvers()
    sources = {}
    for name in FINETUNED:
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            cfg = compose("train", overrides=[f"model={name}", "task=finetune"])
        torch.manual_seed(0)
        model = build_model(cfg.model, len(cfg.features.particle_features), 10)
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, nn.BatchNorm1d):
                    module.running_mean.normal_()
                    module.running_var.uniform_(0.5, 2.0)
        sources[name] = {k: v.clone() for k, v in model.state_dict().items()}
        config = OmegaConf.to_container(cfg, resolve=False)
        state = {f"model.{k}": v for k, v in sources[name].items()}
        torch.save({"state_dict": state, "jettag": {"config": config}}, tmp_path / f"{name}.ckpt")
    sweep = tmp_path / "sweep"
    result = run_cli("jettag-train", "-m", f"model={','.join(FINETUNED)}", "task=finetune",
                     f"task.backbone={tmp_path}/${{hydra:runtime.choices.model}}.ckpt",
                     "task.schedule.freeze_steps=1", "task.schedule.decay=cosine", "task.freeze_batchnorm=true",
                     *files_overrides(toy_root_files), *FAST, "features.max_particles=12",
                     f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {}
    for run_dir in sweep.iterdir():
        if (run_dir / ".hydra" / "overrides.yaml").is_file():
            overrides = OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")
            runs[next(o.split("=", 1)[1] for o in overrides if o.startswith("model="))] = run_dir
    assert sorted(runs) == sorted(FINETUNED)
    for name, run_dir in runs.items():
        assert json.loads((run_dir / "metrics.json").read_text())["info"]["optimizer_steps"] == 2
        tuned = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        tuned = {k[len("model.") :]: v for k, v in tuned["state_dict"].items()}
        assert tuned["head.weight"].shape[0] == 2  # the new two-class head
        backbone = [k for k in sources[name] if not k.startswith("head.")]
        for key in backbone:
            if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
                assert torch.equal(tuned[key], sources[name][key]), (name, key)  # statistics kept
            else:  # loaded, then one AdamW step at lr 1e-4 (the second): each weight moves by about 1e-4
                assert not torch.equal(tuned[key], sources[name][key]), (name, key)
                torch.testing.assert_close(tuned[key], sources[name][key], rtol=0, atol=2e-4)
