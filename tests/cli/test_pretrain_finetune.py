"""Pretraining then fine-tuning through jettag-train on toy files: masked particle modelling (MPMv2,
task=pretrain) and contrastive pretraining (task=contrastive) on files without label branches,
classification plus MPM (task=pretrain task.classification_weight=1) on labelled files; each writes a
checkpoint with its objective, and task=finetune starts from each (the backbone's tensors, checked
against the pretraining checkpoint; a new head). The pretraining experiments compose (and their tasks
build) as their comments say; task=finetune runs for every model config from a checkpoint of it (one
multirun)."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import pytest
import torch
from helpers import JETCLASS_LABELS, run_cli, top_tagging_table, toy_jets, write_root
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from test_config_keys import call
from test_train_eval import FAST, files_overrides
from torch import nn

from jettag.cli import register_resolvers
from jettag.cli.train import build_task
from jettag.features.sets import FeatureSet
from jettag.paths import config_dir
from jettag.pipeline import build_model, callback_configs
from jettag.tasks.classification import JetClassifier

# a tiny ParT (16 wide, one particle block) for the pretraining and fine-tuning runs alike
RUN = ["features.max_particles=32", *FAST, "trainer.limit_val_batches=2", "test=false"]
TINY = ["model.num_layers=1", "model.embed_dims=[16,16]", "model.pair_embed_dims=[8]", *RUN]
PRETRAINING = ["callbacks.model_checkpoint.monitor=val/loss", "callbacks.model_checkpoint.mode=min",
               "trainer.log_every_n_steps=1"]  # fmt: skip
THREE = ("label_QCD", "label_Hbb", "label_Tbqq")


def load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def run_dirs(sweep, key: str) -> dict:
    """{value of the override `key`: run directory} of a multirun."""
    runs = {}
    for run_dir in sweep.iterdir():
        if (run_dir / ".hydra" / "overrides.yaml").is_file():
            overrides = OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")
            runs[next(o.split("=", 1)[1] for o in overrides if o.startswith(f"{key}="))] = run_dir
    return runs


def logged(run_dir) -> set[str]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return {key for row in csv.DictReader(f) for key, value in row.items() if value}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> dict:
    """{objective: run directory} of the three pretraining runs, and the unlabelled files."""
    base = tmp_path_factory.mktemp("pretrain")
    # self-supervised pretraining reads files that carry no label branches at all
    unlabelled, labelled = {}, {}
    for i, split in enumerate(("train", "val")):
        jets = toy_jets(120, seed=80 + i, classes=THREE)
        unlabelled[split] = write_root(base / f"unlabelled_{split}.root",
                                       {k: v for k, v in jets.items() if not k.startswith("label")})  # fmt: skip
        labelled[split] = write_root(base / f"labelled_{split}.root", jets)
    sweep = base / "sweep"
    result = run_cli("jettag-train", "-m", "task=pretrain,contrastive", *files_overrides(unlabelled),
                     "data.labels=null", *TINY, *PRETRAINING, f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    runs = run_dirs(sweep, "task")
    assert sorted(runs) == ["contrastive", "pretrain"]
    cls_mpm = base / "cls_mpm"
    result = run_cli("jettag-train", "task=pretrain", "task.classification_weight=1", *files_overrides(labelled),
                     f"data.labels=[{','.join(THREE)}]", *TINY, *PRETRAINING, f"hydra.run.dir={cls_mpm}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return {
        "mpm": runs["pretrain"],
        "contrastive": runs["contrastive"],
        "cls_mpm": cls_mpm,
        "files": unlabelled,
    }


def test_pretraining_checkpoints(pretrained):
    expected = {
        "mpm": (
            "masked particle modelling (MPMv2)",
            ["unlabelled"],
            ("decoder.", "placeholder", "rank.weight"),
        ),
        "contrastive": ("contrastive (NT-Xent)", ["unlabelled"], ("projection.",)),
        "cls_mpm": (
            "masked particle modelling (MPMv2) + classification",
            list(THREE),
            ("decoder.", "placeholder"),
        ),
    }
    for name, (objective, class_names, task_keys) in expected.items():
        run = pretrained[name]
        assert not (run / "metrics.json").exists(), name  # nothing to test: the checkpoint is the product
        checkpoint = load(run / "checkpoints" / "best.ckpt")
        record, state = checkpoint["jettag"], checkpoint["state_dict"]
        assert record["objective"] == objective and record["class_names"] == class_names, name
        assert record["config"]["callbacks"]["model_checkpoint"]["monitor"] == "val/loss"
        for prefix in task_keys:
            assert any(k.startswith(prefix) for k in state), (name, prefix)
        assert state["model.head.weight"].shape == (len(class_names), 16)
        assert "val/loss" in logged(run) and "train/loss" in logged(run)
        assert checkpoint["callbacks"]  # Lightning's file as usual (resumable)
    # kinpid inputs: the eight identity classes; the classifier's loss is logged with classification
    mpm = load(pretrained["mpm"] / "checkpoints" / "best.ckpt")["state_dict"]
    assert mpm["predict_identity.weight"].shape[0] == 8
    assert {"val/continuous", "val/identity"} <= logged(pretrained["mpm"])
    assert "val/classification" not in logged(pretrained["mpm"])
    assert {"val/classification", "val/identity", "train/classification"} <= logged(pretrained["cls_mpm"])
    assert {"val/top1", "train/top1"} <= logged(pretrained["contrastive"])


def test_unlabelled_runs_refuse_to_classify(pretrained, tmp_path, monkeypatch, capsys):
    """One sentence (exit 2) each, from jettag-train and jettag-eval run in this process."""
    files = pretrained["files"]
    cases = [
        # a classifier cannot train on files without labels: one sentence naming data.labels
        ("jettag-train", ["task=classification", *FAST], "data.labels is null"),
        # masked particle modelling needs a ParT; classification plus MPM needs labels
        ("jettag-train", ["task=pretrain", "model=pfn", *RUN], "needs a ParticleTransformer"),
        ("jettag-train", ["task=pretrain", "task.classification_weight=1", *TINY], "needs labels"),
    ]
    for prog, settings, message in cases:
        status, stderr = call(prog, monkeypatch, capsys, *files_overrides({**files, "test": files["val"]}),
                              "data.labels=null", *settings, f"hydra.run.dir={tmp_path / 'bad'}")  # fmt: skip
        assert status == 2 and message in stderr, stderr[-2000:]
    # jettag-eval evaluates classifiers: a checkpoint trained without labels is one sentence
    status, stderr = call(
        "jettag-eval", monkeypatch, capsys, f"run_dir={pretrained['mpm']}", "trainer.accelerator=cpu"
    )
    assert status == 2 and "was trained on unlabelled jets" in stderr, stderr[-2000:]


def test_finetune_from_each_pretraining_checkpoint(pretrained, toy_root_files, tmp_path):
    """A linear probe from each checkpoint (one multirun): after its training steps the backbone is
    still the pretrained one, bit for bit, and the head is new (two classes)."""
    checkpoints = {
        name: pretrained[name] / "checkpoints" / "best.ckpt" for name in ("mpm", "contrastive", "cls_mpm")
    }
    sweep = tmp_path / "sweep"
    result = run_cli("jettag-train", "-m", "task=finetune", f"task.backbone={','.join(map(str, checkpoints.values()))}",
                     "task.freeze_backbone=true", *files_overrides(toy_root_files), "data.labels=[label_QCD,label_Tbqq]", *TINY,
                     f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    runs = run_dirs(sweep, "task.backbone")
    assert sorted(runs) == sorted(map(str, checkpoints.values()))
    for name, path in checkpoints.items():
        state = load(path)["state_dict"]
        tuned = load(runs[str(path)] / "checkpoints" / "last.ckpt")
        assert tuned["jettag"]["config"]["task"]["backbone"] == str(path)
        tuned = tuned["state_dict"]
        backbone = [k for k in state if k.startswith("model.") and not k.startswith("model.head.")]
        assert len(backbone) > 30
        assert [k for k in backbone if not torch.equal(tuned[k], state[k])] == [], name
        assert sorted(k for k in tuned if k.startswith("model.")) == sorted(
            k for k in state if k.startswith("model.")
        )
        # the pretraining head had 1 (unlabelled) or 3 classes: the fine-tuned one is new, for 2
        assert state["model.head.weight"].shape[0] in (1, 3) and tuned["model.head.weight"].shape == (2, 16)
        assert not any(k.startswith(("decoder.", "projection.", "placeholder")) for k in tuned)


def composed(*overrides: str):
    register_resolvers()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("train", overrides=list(overrides))


DATA = ["data.train_files=[a.root]", "data.val_files=[b.root]"]


def test_pretraining_experiments_compose_and_build():
    mpm = composed("experiment=pretrain_mpm", *DATA)
    clr = composed("experiment=pretrain_contrastive", *DATA)
    cls_mpm = composed("experiment=pretrain_cls_mpm", *DATA)
    sup = composed("experiment=pretrain_supervised", *DATA)
    default = composed("experiment=pretrain_mpm")
    assert list(default.data.train_files) == ["data/study/pretrain/multi_[0-9]*.root"]  # the pretraining set
    assert list(default.data.val_files) == ["data/study/pretrain/multi_val.root"]
    for cfg in (mpm, clr, cls_mpm, sup):
        assert cfg.test is False and cfg.features.max_particles == 32 and cfg.data.batch_size == 256
        assert list(cfg.data.train_files) == ["a.root"] and list(cfg.data.test_files) == ["b.root"]
        assert cfg.model.embed_dims == [64, 256, 64]  # the small ParT
    for cfg in (mpm, clr, cls_mpm, sup):  # checkpoints follow the task's metric (resolved below)
        assert (cfg.callbacks.model_checkpoint.monitor, cfg.callbacks.model_checkpoint.mode) == (
            "auto",
            "auto",
        )
    for cfg in (mpm, clr, cls_mpm):
        assert cfg.task.scheduler._target_ == "jettag.tasks.warmup_cosine"
    assert mpm.task._target_ == cls_mpm.task._target_ == "jettag.tasks.MaskedParticlePretrainer"
    assert clr.task._target_ == "jettag.tasks.ContrastivePretrainer"
    assert mpm.data.labels is None and clr.data.labels is None and mpm.task.classification_weight == 0
    assert cls_mpm.task.classification_weight == 1.0 and list(cls_mpm.data.labels) == JETCLASS_LABELS
    assert sup.task._target_ == "jettag.tasks.JetClassifier" and list(sup.data.labels) == JETCLASS_LABELS
    assert JetClassifier.monitor == ("val/auc", "max")  # what supervised pretraining's checkpoints follow
    assert (mpm.task.mask_fraction, mpm.task.id_weight) == (0.4, 0.3)
    assert clr.task.temperature == 0.1 and [list(v) for v in clr.task.views] == [
        ["rotate", "translate"], ["rotate", "translate", "smear", "split"]]  # fmt: skip
    # each task builds from its config as jettag-train builds it (the fitted features, the classes)
    for cfg, class_names in ((mpm, ["unlabelled"]), (clr, ["unlabelled"]), (cls_mpm, JETCLASS_LABELS)):
        features = FeatureSet.from_config(OmegaConf.to_container(cfg.features, resolve=True))
        model = build_model(cfg.model, features.num_features, len(class_names), feature_names=features.names)
        data = SimpleNamespace(features=features, class_names=class_names, background=0)
        task = build_task(cfg.task, model, data)  # as jettag-train builds it
        assert task.recompute.features is features and task.class_names == class_names
        assert type(task).__name__ == cfg.task._target_.rsplit(".", 1)[1]
        assert task.record_extra()["objective"].startswith(("masked", "contrastive"))
        resolved = next(over for c, over in callback_configs(cfg, task) if c.get("filename") == "best")
        assert resolved == {"monitor": "val/loss", "mode": "min"}


def test_pretrain_supervised_and_finetune_compose():
    ft = composed("experiment=finetune_part", "task.freeze_backbone=true")
    gradual = composed("experiment=finetune_gradual", "model=particlenet")
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
    runs = run_dirs(sweep, "model")
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


def test_kin_pretraining_finetunes_on_the_top_tagging_table(pretrained, tmp_path):
    """Four-momenta-only targets (the top-tagging HDF5 table): a backbone pretrained with features=kin
    fine-tunes on it (its tensors loaded: a linear probe leaves them as they were); the kinpid backbone
    stops with one sentence naming the features that differ."""
    tables = {}
    for i, split in enumerate(("train", "val", "test")):
        tables[split] = tmp_path / f"{split}.h5"
        top_tagging_table(96, seed=90 + i, slots=40).to_hdf(tables[split], key="table", mode="w")
    pre = tmp_path / "pre_kin"
    result = run_cli("jettag-train", "task=contrastive", "features=kin", *files_overrides(pretrained["files"]),
                     "data.labels=null", *TINY, *PRETRAINING, f"hydra.run.dir={pre}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    backbone = pre / "checkpoints" / "best.ckpt"
    target = [
        "data=toplandscape",
        "features=kin",
        *files_overrides(tables),
        *TINY,
        "task.freeze_backbone=true",
    ]
    tuned_dir = tmp_path / "tuned"
    result = run_cli("jettag-train", "task=finetune", f"task.backbone={backbone}", *target,
                     f"hydra.run.dir={tuned_dir}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    state = load(backbone)["state_dict"]
    tuned = load(tuned_dir / "checkpoints" / "last.ckpt")["state_dict"]
    kept = [k for k in state if k.startswith("model.") and not k.startswith("model.head.")]
    assert len(kept) > 30 and all(torch.equal(tuned[k], state[k]) for k in kept)
    assert state["model.embed.input_bn.weight"].shape[0] == 7  # the kin features (REFERENCE section 2)
    assert tuned["model.head.weight"].shape == (2, 16)
    kinpid = pretrained["contrastive"] / "checkpoints" / "best.ckpt"
    result = run_cli("jettag-train", "task=finetune", f"task.backbone={kinpid}", *target,
                     f"hydra.run.dir={tmp_path / 'refused'}")  # fmt: skip
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert str(kinpid) in last and "(part_charge, part_isChargedHadron" in last and "only there" in last
    assert "pretrain a backbone on the features they do carry (e.g. features=kin" in last
    assert "Traceback" not in result.stderr
