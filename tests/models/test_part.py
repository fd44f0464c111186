"""Particle Transformer: size, padding invariance, permutation invariance, backbone/head split."""

import pytest
import torch

from jettag.models import ParticleTransformer

SMALL = dict(embed_dims=(32, 64, 32), pair_embed_dims=(16, 16), num_heads=4, num_layers=2, num_cls_layers=1)


def toy_batch(batch=5, length=40, features=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    counts = torch.tensor([40, 1, 17, 33, 8])[:batch]
    mask = torch.arange(length)[None, :] < counts[:, None]
    x = torch.randn(batch, length, features, generator=g) * mask[..., None]
    pt = torch.rand(batch, length, generator=g) * 50 + 1
    eta = torch.randn(batch, length, generator=g) * 0.3
    phi = torch.randn(batch, length, generator=g) * 0.3
    v = torch.stack([pt * phi.cos(), pt * phi.sin(), pt * eta.sinh(), pt * eta.cosh()], -1) * mask[..., None]
    return x, v, mask


def pad(x, v, mask, length):
    extra = length - x.shape[1]
    return (
        torch.cat([x, x.new_zeros(x.shape[0], extra, x.shape[2])], 1),
        torch.cat([v, v.new_zeros(v.shape[0], extra, 4)], 1),
        torch.cat([mask, mask.new_zeros(mask.shape[0], extra)], 1),
    )


@pytest.mark.parametrize(
    ("inputs", "classes", "interaction", "expected"),
    # published sizes: ParT 2.14M and ParT plain 2.13M for the full inputs (17) and JetClass (10 classes)
    [(17, 10, True, 2.14e6), (17, 10, False, 2.13e6)],
)
def test_reference_parameter_count(inputs, classes, interaction, expected):
    model = ParticleTransformer(inputs, classes, use_interaction=interaction)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(expected, abs=0.005e6)


@pytest.mark.parametrize("interaction", [True, False])
def test_scores_do_not_depend_on_padding(interaction):
    torch.manual_seed(0)
    model = ParticleTransformer(7, 3, use_interaction=interaction, **SMALL).eval()
    x, v, mask = toy_batch()
    with torch.no_grad():
        s64 = model(*pad(x, v, mask, 64))
        s128 = model(*pad(x, v, mask, 128))
        # each jet alone, padded only to its own length
        alone = torch.cat([model(x[i : i + 1, :n], v[i : i + 1, :n], mask[i : i + 1, :n])
                           for i, n in enumerate(mask.sum(1).tolist())])  # fmt: skip
    torch.testing.assert_close(s64, s128, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s64, alone, atol=1e-5, rtol=1e-5)


def test_training_statistics_ignore_padding():
    """Batch-norm statistics come from real particles only, so training steps do not see padding."""
    torch.manual_seed(0)
    model = ParticleTransformer(7, 3, dropout=0, attn_dropout=0, activation_dropout=0, **SMALL).train()
    x, v, mask = toy_batch()
    torch.testing.assert_close(model(*pad(x, v, mask, 64)), model(*pad(x, v, mask, 128)), atol=1e-5, rtol=1e-5)


def test_permutation_invariance():
    torch.manual_seed(1)
    model = ParticleTransformer(7, 3, **SMALL).eval()
    x, v, mask = toy_batch()
    perm = torch.randperm(x.shape[1])
    with torch.no_grad():
        torch.testing.assert_close(model(x, v, mask), model(x[:, perm], v[:, perm], mask[:, perm]), atol=1e-5, rtol=1e-5)


def test_backbone_head_split_and_reset():
    model = ParticleTransformer(7, 3, **SMALL).eval()
    x, v, mask = toy_batch()
    with torch.no_grad():
        features = model.forward_features(x, v, mask)
        assert features.shape == (5, 32)
        torch.testing.assert_close(model.forward_head(features), model(x, v, mask))
    model.reset_head(5)
    assert model(x, v, mask).shape == (5, 5)


def test_gradients_reach_every_parameter():
    model = ParticleTransformer(7, 3, **SMALL).train()
    x, v, mask = toy_batch()
    model(x, v, mask).logsumexp(-1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
