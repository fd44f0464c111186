"""Checkpoints written by earlier jettag versions keep loading and scoring as they did.

ParT's classifier once had hidden layers of its own, `model.head_layers` in the run config and
`head.<k>.0.*` (hidden layer k), `head.<K>.*` (last Linear) in the state dict. Today they are
`fc_params` and `fc.*`, part of the backbone. The old checkpoint is built here the old way: a
backbone with a plain head plus, as its head, the module the old code built (a Sequential of
(Linear, activation, Dropout) blocks and a final Linear); the expected scores are that module applied
to the backbone's features.
"""

from __future__ import annotations

import pytest
import torch
from published import PUBLISHED
from torch import nn

from jettag.checkpoint import as_written, model_state
from jettag.errors import ConfigError
from jettag.inference import load_trained
from jettag.models import ParticleNet, ParticleTransformer

SMALL = dict(embed_dims=[16, 32, 16], pair_embed_dims=[8], num_heads=2, num_layers=1, num_cls_layers=1)
FEATURES = {"name": "kin", "max_particles": 32, "particle_features": [[f[0], None] for f in PUBLISHED["kin"]]}


def jets(n_jets=6, length=20, seed=3):
    g = torch.Generator().manual_seed(seed)
    counts = torch.tensor([20, 1, 7, 13, 4, 20])[:n_jets]
    mask = torch.arange(length)[None, :] < counts[:, None]
    x = torch.randn(n_jets, length, 7, generator=g) * mask[..., None]
    pt, eta, phi = (
        torch.rand(n_jets, length, generator=g) * 50 + 1,
        *torch.randn(2, n_jets, length, generator=g) * 0.3,
    )
    v = torch.stack([pt * phi.cos(), pt * phi.sin(), pt * eta.sinh(), pt * eta.cosh()], -1) * mask[..., None]
    return x, v, mask


def old_checkpoint(path, head_layers, seed=0):
    """A ParT run as the earlier version saved it; returns (backbone, old head) to compute its scores."""
    torch.manual_seed(seed)
    backbone = ParticleTransformer(7, 3, **SMALL).eval()
    with torch.no_grad():  # statistics as a trained model has them
        for module in backbone.modules():
            if isinstance(module, nn.BatchNorm1d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
    blocks, dim = [], 16
    for width, dropout, *activation in head_layers:
        act = nn.GELU() if activation == ["gelu"] else nn.ReLU()
        blocks.append(nn.Sequential(nn.Linear(dim, width), act, nn.Dropout(dropout)))
        dim = width
    old_head = nn.Sequential(*blocks, nn.Linear(dim, 3)).eval()
    state = {f"model.{k}": t for k, t in backbone.state_dict().items() if not k.startswith("head.")}
    state.update({f"model.head.{k}": t for k, t in old_head.state_dict().items()})
    assert "model.head.0.0.weight" in state and f"model.head.{len(head_layers)}.bias" in state
    config = {"model": {"_target_": "jettag.models.ParticleTransformer", **SMALL, "head_layers": head_layers},
              "features": FEATURES}  # fmt: skip
    torch.save({"state_dict": state, "jettag": {"config": config, "class_names": ["a", "b", "c"], "background": 0}},
               path)  # fmt: skip
    return backbone, old_head


@pytest.mark.parametrize("head_layers", [[[12, 0.1]], [[12, 0.1, "gelu"], [10, 0.2]]], ids=["relu", "gelu-2"])
def test_part_checkpoint_with_head_layers_scores_as_before(head_layers, tmp_path):
    backbone, old_head = old_checkpoint(tmp_path / "old.ckpt", head_layers)
    trained = load_trained(tmp_path / "old.ckpt")
    assert "head_layers" not in trained.config["model"]
    assert trained.config["model"]["fc_params"] == head_layers
    assert isinstance(trained.model.head, nn.Linear) and trained.model.dim == head_layers[-1][0]
    x, v, mask = jets()
    with torch.no_grad():
        expected = old_head(backbone.forward_features(x, v, mask))
        got = trained.model(x, v, mask)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_old_part_backbone_loads_for_fine_tuning(tmp_path):
    """The old hidden layers are backbone now: they load into `fc`; a model without them is told so."""
    from jettag.tasks.finetune import load_backbone

    _, old_head = old_checkpoint(tmp_path / "old.ckpt", [[12, 0.1]])
    model = ParticleTransformer(7, 2, **SMALL, fc_params=[[12, 0.1]])
    loaded = load_backbone(model, tmp_path / "old.ckpt")
    assert {"fc.0.weight", "fc.0.bias"} <= set(loaded) and not any(k.startswith("head.") for k in loaded)
    torch.testing.assert_close(model.fc[0].weight, old_head[0][0].weight, rtol=0, atol=0)
    assert model.head.weight.shape == (2, 12)
    with pytest.raises(
        ConfigError, match=r"'fc\.0\.weight' that this model lacks.*fc_params.*\[\[12, 0\.1\]\]"
    ):
        load_backbone(ParticleTransformer(7, 2, **SMALL), tmp_path / "old.ckpt")


def test_current_names_and_configs_are_left_alone():
    model = ParticleNet(7, 2, conv_params=[(4, (8,))], fc_params=[(16, 0.1)])
    state = {f"model.{k}": t for k, t in model.state_dict().items()}
    assert list(model_state({"state_dict": state})) == list(model.state_dict())
    config = {"model": {"_target_": "jettag.models.ParticleTransformer", "fc_params": [[8, 0.1]]}}
    assert as_written(config) == config
