"""Fine-tuning: the backbone loads bit for bit, the head is new and sized for the classes, the
learning rates follow the recipe (head x50, layer-wise decay worked out by hand), a frozen
backbone does not move during a step, the fine-tuning schedule (warm-up, frozen then ramped
backbone, cosine decay) gives each parameter the learning rate worked out here step by step, and
the backbone's features, model type and the schedule's settings are checked in one sentence."""

from __future__ import annotations

import functools
import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from jettag.data import JetBatch
from jettag.errors import ConfigError
from jettag.models import ParticleCNN, ParticleFlowNetwork, ParticleTransformer
from jettag.tasks import FineTuner, flat_then_decay

SMALL = dict(embed_dims=(32, 64, 32), pair_embed_dims=(16, 16), num_heads=4, num_layers=2, num_cls_layers=1)


def toy_batch(batch=6, length=20, features=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    counts = torch.tensor([20, 3, 12, 7, 20, 1])[:batch]
    mask = torch.arange(length)[None, :] < counts[:, None]
    x = torch.randn(batch, length, features, generator=g) * mask[..., None]
    pt = torch.rand(batch, length, generator=g) * 50 + 1
    eta, phi = (torch.randn(batch, length, generator=g) * 0.3 for _ in range(2))
    v = torch.stack([pt * phi.cos(), pt * phi.sin(), pt * eta.sinh(), pt * eta.cosh()], -1) * mask[..., None]
    y = torch.tensor([0, 1, 1, 0, 1, 0])[:batch]
    return JetBatch(x, v, mask, y, weight=torch.ones(batch), entry=torch.arange(batch))


def pretrained_checkpoint(path, num_classes=5, seed=1):
    """A file as jettag-train writes it: Lightning's state dict (model.*) plus jettag's metadata."""
    torch.manual_seed(seed)
    source = ParticleTransformer(input_dim=7, num_classes=num_classes, **SMALL)
    state = {f"model.{k}": v.clone() for k, v in source.state_dict().items()}
    state["decoder.0.weight"] = torch.ones(3)  # other modules of the task (e.g. a pretraining decoder)
    torch.save({"state_dict": state, "jettag": {"config": None, "class_names": []}}, path)
    return source.state_dict()


def adamw(lr=1e-4):
    return functools.partial(torch.optim.AdamW, lr=lr, weight_decay=0.01)


def new_model(num_classes=2, seed=7):
    torch.manual_seed(seed)
    return ParticleTransformer(input_dim=7, num_classes=num_classes, **SMALL)


def test_backbone_loads_bit_for_bit_and_head_is_new(tmp_path):
    source = pretrained_checkpoint(tmp_path / "pre.ckpt")
    model = new_model()
    fresh_head = model.head.weight.clone()
    task = FineTuner(model, adamw(), backbone=str(tmp_path / "pre.ckpt"), class_names=["QCD", "Top"])
    loaded = task.model.state_dict()
    backbone_keys = [k for k in source if not k.startswith("head.")]
    assert len(backbone_keys) > 50
    for key in backbone_keys:
        assert torch.equal(loaded[key], source[key]), key
    # the head: 2 outputs from the 32-wide class token, not the file's 5-class head
    assert task.model.head.weight.shape == (2, 32) and task.model.head.bias.shape == (2,)
    assert task.model.num_classes == 2
    assert not torch.equal(task.model.head.weight, fresh_head)  # re-initialised by reset_head
    assert task(toy_batch()).shape == (6, 2)


def test_mismatched_backbone_is_one_sentence(tmp_path):
    pretrained_checkpoint(tmp_path / "pre.ckpt")
    wider = ParticleTransformer(input_dim=13, num_classes=2, **SMALL)  # kinpid inputs vs kin in the file
    with pytest.raises(ConfigError, match=r"task.backbone: .*embed.input_bn.weight.* shape"):
        FineTuner(wider, adamw(), backbone=str(tmp_path / "pre.ckpt"), class_names=["a", "b"])
    with pytest.raises(ConfigError, match="does not exist"):
        FineTuner(new_model(), adamw(), backbone=str(tmp_path / "nope.ckpt"), class_names=["a", "b"])
    with pytest.raises(ConfigError, match=r"task\.backbone is not set"):
        FineTuner(new_model(), adamw(), backbone=None, class_names=["a", "b"])


def test_learning_rates_head_factor_and_layer_decay(tmp_path):
    pretrained_checkpoint(tmp_path / "pre.ckpt")
    task = FineTuner(new_model(), adamw(1e-4), backbone=str(tmp_path / "pre.ckpt"), class_names=["a", "b"],
                     head_lr_factor=50, layer_decay=0.5)  # fmt: skip
    optimizer = task.configure_optimizers()
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    wd_of = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    named = dict(task.model.named_parameters())
    assert len(lr_of) == len(named)  # every parameter in exactly one group
    # 2 particle blocks, 1 class block: depths embed 0, blocks 1-2, class token / block 3, norm 4 (top)
    expected = {
        "head.weight": 1e-4 * 50,
        "norm.weight": 1e-4,
        "cls_token": 1e-4 * 0.5,
        "cls_blocks.0.fc1.weight": 1e-4 * 0.5,
        "blocks.1.attn.in_proj.weight": 1e-4 * 0.25,
        "blocks.0.fc2.weight": 1e-4 * 0.125,
        "embed.mlp.1.weight": 1e-4 * 0.0625,
        "pair_embed.mlp.0.weight": 1e-4 * 0.0625,
    }
    for name, lr in expected.items():
        assert lr_of[id(named[name])] == pytest.approx(lr), name
    assert wd_of[id(named["head.weight"])] == 0.01 and wd_of[id(named["cls_token"])] == 0.0
    assert wd_of[id(named["norm.weight"])] == 0.0
    # the published recipe: no scheduler
    assert not isinstance(optimizer, dict)
    # class attention at the head's lr (for a backbone whose class attention was not pretrained)
    task = FineTuner(new_model(), adamw(1e-4), backbone=str(tmp_path / "pre.ckpt"), class_names=["a", "b"],
                     head_lr_modules=["head", "cls_blocks", "cls_token"])  # fmt: skip
    lr_of = {
        id(p): group["lr"] for group in task.configure_optimizers().param_groups for p in group["params"]
    }
    named = dict(task.model.named_parameters())
    assert lr_of[id(named["cls_blocks.0.fc1.weight"])] == pytest.approx(5e-3)
    assert lr_of[id(named["cls_token"])] == pytest.approx(5e-3)
    assert lr_of[id(named["norm.weight"])] == pytest.approx(1e-4)
    with pytest.raises(ConfigError, match="has no module 'cls_block'"):
        FineTuner(new_model(), adamw(), backbone=str(tmp_path / "pre.ckpt"), head_lr_modules=["cls_block"])


def test_frozen_backbone_does_not_change_in_a_step(tmp_path):
    pretrained_checkpoint(tmp_path / "pre.ckpt")
    task = FineTuner(new_model(), adamw(1e-2), backbone=str(tmp_path / "pre.ckpt"), class_names=["a", "b"],
                     freeze_backbone=True)  # fmt: skip
    task.train()
    assert not task.model.embed.training and task.model.head.training  # linear probe: backbone in eval mode
    before = {k: v.clone() for k, v in task.model.state_dict().items()}  # parameters and batch-norm buffers
    optimizer = task.configure_optimizers()
    trained = [p for group in optimizer.param_groups for p in group["params"]]
    assert {id(p) for p in trained} == {id(p) for p in task.model.head.parameters()}
    batch = toy_batch()
    for _ in range(2):
        optimizer.zero_grad()
        F.cross_entropy(task(batch), batch.y).backward()
        optimizer.step()
    after = task.model.state_dict()
    for key, value in before.items():
        if key.startswith("head."):
            assert not torch.equal(after[key], value), key
        else:
            assert torch.equal(after[key], value), key


def test_backbone_from_a_weaver_core_file(tmp_path):
    """A weaver-core ParT state dict (as weaver saves it, `mod.` prefix, 10-class head) as the backbone."""
    weaver_model = pytest.importorskip("weaver.nn.model.ParticleTransformer")
    torch.manual_seed(3)
    weaver = weaver_model.ParticleTransformer(
        input_dim=7, num_classes=10, pair_input_dim=4, use_pre_activation_pair=False,
        embed_dims=[32, 64, 32], pair_embed_dims=[16, 16], num_heads=4, num_layers=2, num_cls_layers=1,
        cls_block_params={"dropout": 0, "attn_dropout": 0, "activation_dropout": 0}, fc_params=[],
    )  # fmt: skip
    with torch.no_grad():
        for p in weaver.parameters():
            p.add_(0.1 * torch.randn(p.shape))  # no tensor left at its (shared) initial value
    source = {f"mod.{k}": v.clone() for k, v in weaver.state_dict().items()}
    torch.save(source, tmp_path / "ParT_small.pt")
    task = FineTuner(new_model(), adamw(), backbone=str(tmp_path / "ParT_small.pt"), class_names=["a", "b"])
    mine = task.model.state_dict()
    # spot checks by weaver's own names
    pairs = {
        "embed.input_bn.running_var": "mod.embed.input_bn.running_var",
        "embed.mlp.1.weight": "mod.embed.embed.1.weight",
        "blocks.1.head_scale": "mod.blocks.1.c_attn",
        "blocks.0.attn.in_proj.weight": "mod.blocks.0.attn.in_proj.weight",
        "cls_blocks.0.fc2.bias": "mod.cls_blocks.0.fc2.bias",
        "cls_token": "mod.cls_token",
        "norm.weight": "mod.norm.weight",
    }
    for mine_key, weaver_key in pairs.items():
        assert torch.equal(mine[mine_key], source[weaver_key]), mine_key
    torch.testing.assert_close(
        mine["pair_embed.mlp.1.weight"], source["mod.pair_embed.embed.1.weight"][..., 0]
    )
    assert task.model.head.weight.shape == (2, 32)


# --- any model, its features, the schedule ---------------------------------------------------------

# P-CNN with layers input_norm (depth 0), stem (1), units.0 (2), units.1 (3, stride 2), fc.0 (4, top)
PCNN = dict(conv_params=[(4,), (4,), (8,)], fc_params=[(8, 0.0)])
PCNN_DEPTHS = {"input_norm": 0, "stem": 1, "units.0": 2, "units.1": 3, "fc.0": 4}
KIN = [["part_pt_log", 1.7, 0.7, -5.0, 5.0], ["part_e_log", 2.0, 0.7, -5.0, 5.0],
       ["part_logptrel", -4.7, 0.7, -5.0, 5.0], ["part_logerel", -4.7, 0.7, -5.0, 5.0],
       ["part_deltaR", 0.2, 4.0, -5.0, 5.0], ["part_deta", None], ["part_dphi", None]]  # fmt: skip
PID = [["part_charge", None], ["part_isChargedHadron", None], ["part_isNeutralHadron", None],
       ["part_isPhoton", None], ["part_isElectron", None], ["part_isMuon", None]]  # fmt: skip
KINPID_BEFORE = KIN + PID  # deta, dphi at columns 5-6, as checkpoints written before the reordering
KINPID_AFTER = KIN[:5] + PID + KIN[5:]


def checkpoint_of(path, model, features=None):
    """`model` saved as jettag-train saves it, with its BN statistics randomized and the run's config."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm1d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
    config = {"features": {"name": "test", "particle_features": features},
              "model": {"_target_": f"jettag.models.{type(model).__name__}"}}  # fmt: skip
    state = {f"model.{k}": v.clone() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "jettag": {"config": config, "class_names": []}}, path)
    return {k: v.clone() for k, v in model.state_dict().items()}


def pcnn(num_classes=3, seed=0):
    torch.manual_seed(seed)
    return ParticleCNN(7, num_classes, **PCNN)


SCHEDULE = dict(freeze_steps=0.25, ramp_steps=4, warmup_steps=2, decay="cosine", final_factor=0.1)
STEPS, BASE_LR, HEAD_FACTOR, DECAY = 12, 1e-2, 10.0, 0.5


def expected_factor(step: int, backbone: bool) -> float:
    """The lr factor of configs/task/finetune.yaml's description, for SCHEDULE over 12 steps."""
    warmup, freeze, ramp, final = 2, 3, 4, 0.1  # freeze_steps 0.25 x 12 steps = 3
    factor = min(1.0, (step + 1) / warmup)
    if backbone:
        if step < freeze:
            return 0.0
        factor *= min(1.0, (step - freeze + 1) / ramp)
    start = max(warmup, freeze + ramp)  # the cosine starts at step 7 and ends at step 11
    if step > start:
        factor *= final + (1 - final) * (1 + math.cos(math.pi * (step - start) / (STEPS - 1 - start))) / 2
    return factor


class Recorder(L.Callback):
    """Per optimizer step: each parameter's lr, which parameters have a gradient and AdamW state, the
    backbone's mode; after the step, the model's tensors."""

    def __init__(self):
        self.steps = []

    def on_before_optimizer_step(self, trainer, module, optimizer):
        names = {id(p): n for n, p in module.model.named_parameters()}
        self.steps.append({
            "lr": {names[id(p)]: group["lr"] for group in optimizer.param_groups for p in group["params"]},
            "grad": {n for n, p in module.model.named_parameters() if p.grad is not None},
            "adam": {names[id(p)] for p, state in optimizer.state.items() if state},
            "bn_training": module.model.input_norm.training,
        })  # fmt: skip

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.steps[-1]["after"] = {k: v.clone() for k, v in module.model.state_dict().items()}


@pytest.fixture(scope="module")
def scheduled_run(tmp_path_factory):
    """12 optimizer steps of a P-CNN fine-tuned with SCHEDULE, layer decay 0.5 and head lr x10, through Lightning."""
    path = tmp_path_factory.mktemp("schedule") / "pcnn.ckpt"
    source = checkpoint_of(path, pcnn())
    task = FineTuner(pcnn(seed=1), adamw(BASE_LR), backbone=str(path), class_names=["a", "b"],
                     head_lr_factor=HEAD_FACTOR, layer_decay=DECAY, schedule=SCHEDULE)  # fmt: skip
    recorder = Recorder()
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[recorder])  # fmt: skip
    batches = [toy_batch(seed=s) for s in range(STEPS)]
    trainer.fit(task, train_dataloaders=DataLoader(batches, batch_size=None))
    assert trainer.global_step == STEPS and len(recorder.steps) == STEPS
    return source, recorder.steps


def test_schedule_learning_rates_step_by_step(scheduled_run):
    # hand-worked values of the description
    assert expected_factor(0, False) == 0.5 and expected_factor(1, False) == 1.0
    assert expected_factor(2, True) == 0.0 and expected_factor(3, True) == 0.25
    assert expected_factor(6, True) == 1.0 and expected_factor(7, True) == 1.0
    assert expected_factor(9, False) == pytest.approx(0.55) and expected_factor(11, True) == pytest.approx(
        0.1
    )
    _, steps = scheduled_run
    for step, record in enumerate(steps):
        # every parameter in one group: input_norm 2, stem 4 (conv, norm), units.0 8, units.1 9 (with its
        # shortcut), fc.0 2; the head's 2
        assert len(record["lr"]) == 27
        for name, lr in record["lr"].items():
            if name.startswith("head."):
                expected = BASE_LR * HEAD_FACTOR * expected_factor(step, backbone=False)
            else:
                depth = next(d for prefix, d in PCNN_DEPTHS.items() if name.startswith(prefix + "."))
                expected = BASE_LR * DECAY ** (4 - depth) * expected_factor(step, backbone=True)
            assert lr == pytest.approx(expected, rel=1e-9, abs=1e-15), (step, name)


def test_backbone_frozen_for_the_first_steps_then_trained(scheduled_run):
    source, steps = scheduled_run
    backbone = [k for k in source if not k.startswith("head.")]
    params = {n for n in steps[0]["lr"] if not n.startswith("head.")}
    previous_head = None
    for step, record in enumerate(steps):
        frozen = step < 3
        after = record["after"]
        assert record["bn_training"] is not frozen  # eval mode while frozen
        assert (record["grad"] & params) == (set() if frozen else params)  # no gradient while frozen
        if frozen:  # parameters and batch-norm statistics as loaded, no AdamW state
            assert all(torch.equal(after[k], source[k]) for k in backbone), step
            assert record["adam"] == {"head.weight", "head.bias"} or (step == 0 and not record["adam"])
        head = after["head.weight"]
        assert previous_head is None or not torch.equal(head, previous_head), step
        previous_head = head
    # step 3 is the backbone's first: AdamW's moments for it start there, and every tensor moves
    assert steps[3]["adam"] == {"head.weight", "head.bias"}
    assert steps[4]["adam"] >= params
    moved = [k for k in backbone if not torch.equal(steps[3]["after"][k], source[k])]
    assert set(moved) >= params and "input_norm.running_mean" in moved


def tiny_part(num_classes=2, seed=7):
    return new_model(num_classes, seed)


@pytest.mark.parametrize("build", [tiny_part, pcnn], ids=["part", "pcnn"])
@pytest.mark.parametrize("freeze_batchnorm", [True, False])
def test_freeze_batchnorm_keeps_loaded_statistics(tmp_path, build, freeze_batchnorm):
    source = checkpoint_of(tmp_path / "pre.ckpt", build(num_classes=5))
    task = FineTuner(build(num_classes=2, seed=3), adamw(1e-2), backbone=str(tmp_path / "pre.ckpt"),
                     class_names=["a", "b"], freeze_batchnorm=freeze_batchnorm)  # fmt: skip
    task.train()
    norms = {n for n, m in task.model.named_modules() if isinstance(m, nn.BatchNorm1d)}
    assert len(norms) >= 3 and all(
        task.model.get_submodule(n).training is not freeze_batchnorm for n in norms
    )
    optimizer = task.configure_optimizers()
    batch = toy_batch()
    for _ in range(2):
        optimizer.zero_grad()
        F.cross_entropy(task(batch), batch.y).backward()
        optimizer.step()
    after = task.model.state_dict()
    for key in source:
        if key.startswith("head."):
            continue
        module, _, tensor = key.rpartition(".")
        if module in norms and tensor in ("running_mean", "running_var", "num_batches_tracked"):
            assert torch.equal(after[key], source[key]) is freeze_batchnorm, key
        else:  # every weight trains, the batch norms' affine weights too
            assert not torch.equal(after[key], source[key]), key


def test_probe_trains_the_head_lr_modules(tmp_path):
    pretrained_checkpoint(tmp_path / "pre.ckpt")
    fast = ["head", "cls_blocks", "cls_token", "norm"]
    task = FineTuner(new_model(), adamw(1e-2), backbone=str(tmp_path / "pre.ckpt"), class_names=["a", "b"],
                     freeze_backbone=True, head_lr_modules=fast)  # fmt: skip
    task.train()
    assert not task.model.embed.training and not task.model.blocks.training and task.model.cls_blocks.training
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    optimizer = task.configure_optimizers()
    named = dict(task.model.named_parameters())
    trained = {n for n in named if n.split(".")[0] in fast}
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(named[n]) for n in trained}
    batch = toy_batch()
    for _ in range(2):
        optimizer.zero_grad()
        F.cross_entropy(task(batch), batch.y).backward()
        optimizer.step()
    after = task.model.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value) is (key not in trained), key


def test_frozen_steps_leave_the_backbone_without_gradients(tmp_path):
    """The schedule's frozen steps with class attention at the head's lr (trained through the graph)."""
    pretrained_checkpoint(tmp_path / "pre.ckpt")
    fast = ["head", "cls_blocks", "cls_token", "norm"]
    task = FineTuner(new_model(), adamw(), backbone=str(tmp_path / "pre.ckpt"), class_names=["a", "b"],
                     head_lr_modules=fast, schedule={"freeze_steps": 5})  # fmt: skip
    task.train()
    batch = toy_batch()
    for frozen in (True, False):
        task.set_backbone_frozen(frozen)
        assert task.model.embed.training is not frozen and task.model.cls_blocks.training
        task.model.zero_grad(set_to_none=True)
        F.cross_entropy(task(batch), batch.y).backward()
        for name, param in task.model.named_parameters():
            assert (param.grad is None) is (frozen and name.split(".")[0] not in fast), name


def test_backbone_features_must_be_the_runs(tmp_path):
    path = tmp_path / "old.ckpt"
    checkpoint_of(path, pcnn(), features=KINPID_BEFORE)
    with pytest.raises(ConfigError) as err:
        FineTuner(pcnn(), adamw(), backbone=str(path), class_names=["a", "b"], feature_names=KINPID_AFTER)
    message = str(err.value)
    assert "old.ckpt' was trained on the same 13 particle features in another order" in message
    assert "column 5 is part_deta there but part_charge here" in message
    assert "and 5 more columns differ" in message  # columns 5-12 differ
    assert ("'features.particle_features=[[part_pt_log,1.7,0.7,-5.0,5.0],[part_e_log,2.0,0.7,-5.0,5.0],"
            "[part_logptrel,-4.7,0.7,-5.0,5.0],[part_logerel,-4.7,0.7,-5.0,5.0],[part_deltaR,0.2,4.0,-5.0,5.0],"
            "[part_deta,null],[part_dphi,null],[part_charge,null],") in message  # fmt: skip
    assert message.count(".") >= 1 and "\n" not in message
    checkpoint_of(path, pcnn(), features=KIN)
    with pytest.raises(
        ConfigError, match=r"other particle features than this run's \(part_charge, .* only here\)"
    ):
        FineTuner(pcnn(), adamw(), backbone=str(path), class_names=["a", "b"], feature_names=KINPID_AFTER)
    # the same list (names as plain strings too) loads
    FineTuner(pcnn(), adamw(), backbone=str(path), feature_names=[e[0] for e in KIN], class_names=["a", "b"])


def test_backbone_of_another_model_or_a_weaver_file_of_a_baseline(tmp_path):
    torch.manual_seed(0)
    checkpoint_of(tmp_path / "pfn.ckpt", ParticleFlowNetwork(7, 2, phi_dims=(8,), f_dims=(8,)))
    with pytest.raises(ConfigError, match=r"pfn\.ckpt' has the tensor 'phi\.0\.weight' that this model lacks "
                                          r"\(it holds a ParticleFlowNetwork, this run builds a ParticleTransformer\)"):  # fmt: skip
        FineTuner(new_model(), adamw(), backbone=str(tmp_path / "pfn.ckpt"), class_names=["a", "b"])
    torch.save({"mod.phi.0.weight": torch.ones(8, 7)}, tmp_path / "weaver.pt")
    with pytest.raises(ConfigError, match=r"weaver\.pt' is not a jettag checkpoint, and weaver-core files exist "
                                          r"only for ParT and ParticleNet, not ParticleCNN"):  # fmt: skip
        FineTuner(pcnn(), adamw(), backbone=str(tmp_path / "weaver.pt"), class_names=["a", "b"])


FLAT = functools.partial(flat_then_decay, flat_fraction=0.7)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(schedule={"freeze_steps": -1}), r"task\.schedule\.freeze_steps=-1 is negative"),
        (dict(schedule={"ramp_steps": 2.5}), r"task\.schedule\.ramp_steps=2\.5 is neither a whole number"),
        (
            dict(schedule={"warmup_steps": "10"}),
            r"task\.schedule\.warmup_steps='10' must be a number of steps",
        ),
        (
            dict(schedule={"decay": "linear"}),
            r"task\.schedule\.decay='linear' is not one of constant, cosine",
        ),
        (dict(schedule={"final_factor": 2}), r"task\.schedule\.final_factor=2 must be a number from 0 to 1"),
        (dict(schedule={"freeze": 100}), r"task\.schedule has no setting 'freeze'"),
        (dict(layer_decay=0.0), r"task\.layer_decay=0\.0 must lie in \(0, 1\]"),
        (dict(layer_decay=1.5), r"task\.layer_decay=1\.5 must lie in \(0, 1\]"),
        (
            dict(head_lr_modules=["head", "blocks.0"]),
            r"task\.head_lr_modules: the model has no module 'blocks\.0'",
        ),
        (
            dict(scheduler=FLAT, schedule={"decay": "cosine"}),
            r"task\.scheduler and task\.schedule are both set",
        ),
    ],
)
def test_bad_settings_are_one_sentence(settings, message):
    with pytest.raises(ConfigError, match=message):
        FineTuner(new_model(), adamw(), backbone="never/read.ckpt", class_names=["a", "b"], **settings)
