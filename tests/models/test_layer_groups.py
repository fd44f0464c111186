"""The model, not the task, says what its head is and how its layers stack (`jettag.models.JetTagger`).

For every shipped model config the groups of `layer_groups()` are written out here by hand (from the
input upwards); every backbone parameter must fall under exactly one group and no head parameter
under any, and `layer_depths()` must number the groups in that order.
"""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from jettag.models import JetTagger
from jettag.paths import config_dir
from jettag.pipeline import build_model


def blocks(prefix: str, indices) -> list[tuple[str, ...]]:
    return [(f"{prefix}.{i}",) for i in indices]


def part_groups(num_layers: int, num_cls_layers: int) -> list[tuple[str, ...]]:
    return [
        ("embed", "pair_embed"),
        *blocks("blocks", range(num_layers)),
        ("cls_token", "cls_blocks.0"),
        *blocks("cls_blocks", range(1, num_cls_layers)),
        ("norm",),
    ]


EXPECTED = {
    "part": part_groups(8, 2),
    "part_small": part_groups(4, 1),
    "part_plain": part_groups(8, 2),
    "particlenet": [("input_norm",), *blocks("blocks", range(3)), ("fc.0",)],
    # Sequential(Linear, ReLU) x 3: the Linear layers are items 0, 2, 4
    "pfn": [*blocks("phi", (0, 2, 4)), *blocks("f", (0, 2, 4))],
    # stem, then one ResNet unit per width of the stages (64, 64), (64, 64), (128, 128)
    "pcnn": [("input_norm",), ("stem",), *blocks("units", range(6)), ("fc.0",)],
}


def under(prefix: str, name: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@pytest.mark.parametrize("name", list(EXPECTED))
def test_layer_groups_cover_the_backbone_once(name):
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={name}"])
    model = build_model(cfg.model, 7, 2)
    assert isinstance(model, JetTagger) and model.head_modules == ("head",)
    groups = model.layer_groups()
    assert [tuple(g) for g in groups] == EXPECTED[name]
    names = [n for n, _ in model.named_parameters()]
    head = [n for n in names if n.startswith("head.")]
    assert head == ["head.weight", "head.bias"]
    for param in names:
        hits = [depth for depth, group in enumerate(groups) for prefix in group if under(prefix, param)]
        assert len(hits) == (0 if param in head else 1), (param, hits)
    depths = model.layer_depths()
    assert set(depths) == set(names) - set(head)
    for depth, group in enumerate(groups):
        members = [p for p in names if any(under(prefix, p) for prefix in group)]
        assert members, group  # no empty group: each is a layer of the model
        assert {depths[p] for p in members} == {depth}
    if name == "part_plain":  # no pair embedding: its prefix covers nothing
        assert not any(under("pair_embed", p) for p in names)


def test_reset_head_and_the_shared_forward():
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["model=pfn"])
    model = build_model(cfg.model, 7, 2)
    x = torch.randn(3, 5, 7)
    v = torch.randn(3, 5, 4)
    mask = torch.ones(3, 5, dtype=torch.bool)
    torch.testing.assert_close(model(x, v, mask), model.head(model.forward_features(x, v, mask)))
    model.reset_head(4)
    assert model.num_classes == 4 and model.head.weight.shape == (4, 128)
    assert model(x, v, mask).shape == (3, 4)
