"""Fine-tuning: the backbone loads bit for bit, the head is new and sized for the classes, the
learning rates follow the recipe (head x50, layer-wise decay worked out by hand), and a frozen
backbone does not move during a step."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from jettag.errors import ConfigError
from jettag.models import ParticleTransformer
from jettag.tasks import FineTuner

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
    return {"x": x, "v": v, "mask": mask, "y": y}


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
        F.cross_entropy(task(batch), batch["y"]).backward()
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
