"""Baselines (ParT plain, ParticleNet, PFN, P-CNN) and the complexity counters.

Every model: scores independent of padding, backbone/head split, gradients everywhere; the
permutation-invariant ones also independent of particle order. Shipped configs are checked
against the ParT paper's parameter and multiply-add counts; the counters against hand counts.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from torch import nn

from jettag.models import ParticleCNN, ParticleFlowNetwork, ParticleNet, ParticleTransformer
from jettag.models.complexity import count_macs, count_parameters
from jettag.models.particlenet import angular_distances, nearest_neighbours, reference_neighbours
from jettag.paths import config_dir
from jettag.pipeline import build_model

PART_SMALL = dict(embed_dims=(32, 64, 32), pair_embed_dims=(16, 16), num_heads=4, num_layers=2,
                  num_cls_layers=1)  # fmt: skip

# Small versions, sized to exercise the edge cases: k = 8 with jets of 1 and 8 particles (fewer
# neighbours than k), and P-CNN strides on odd lengths.
SMALL = {
    "part": lambda c, n: ParticleTransformer(c, n, **PART_SMALL),
    "part_plain": lambda c, n: ParticleTransformer(c, n, use_interaction=False, **PART_SMALL),
    "particlenet": lambda c, n: ParticleNet(c, n, [(8, (16, 16)), (8, (24, 24))], fc_params=[(16, 0.1)]),
    "pfn": lambda c, n: ParticleFlowNetwork(c, n, phi_dims=(16, 16), f_dims=(16, 16)),
    "pcnn": lambda c, n: ParticleCNN(c, n, conv_params=[(8,), (8,), (16, 16), (16,)], fc_params=[(16, 0.1)]),
}
PERMUTATION_INVARIANT = ["part", "part_plain", "particlenet", "pfn"]
COUNTS = [40, 1, 17, 33, 8, 2]


def toy_batch(counts=COUNTS, features=7, seed=0):
    """Jets padded to their longest, particles pT-ordered; padding is zero as the data pipeline makes it."""
    g = torch.Generator().manual_seed(seed)
    batch, length = len(counts), max(counts)
    mask = torch.arange(length)[None, :] < torch.tensor(counts)[:, None]
    x = torch.randn(batch, length, features, generator=g) * mask[..., None]
    pt = (torch.rand(batch, length, generator=g) * 50 + 1).sort(dim=1, descending=True).values
    eta = torch.randn(batch, length, generator=g) * 0.3
    phi = torch.randn(batch, length, generator=g) * 0.3
    v = torch.stack([pt * phi.cos(), pt * phi.sin(), pt * eta.sinh(), pt * eta.cosh()], -1) * mask[..., None]
    return x, v, mask


def pad(x, v, mask, extra):
    return F.pad(x, (0, 0, 0, extra)), F.pad(v, (0, 0, 0, extra)), F.pad(mask, (0, extra))


def no_dropout(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    return model


@pytest.mark.parametrize("name", list(SMALL))
def test_scores_do_not_depend_on_padding(name):
    torch.manual_seed(0)
    model = SMALL[name](7, 3).eval()
    x, v, mask = toy_batch()
    with torch.no_grad():
        scores = model(x, v, mask)
        padded = model(*pad(x, v, mask, 20))
        # each jet alone, padded only to its own length
        alone = torch.cat([model(x[i : i + 1, :n], v[i : i + 1, :n], mask[i : i + 1, :n])
                           for i, n in enumerate(COUNTS)])  # fmt: skip
    torch.testing.assert_close(scores, padded, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scores, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["particlenet", "pfn", "pcnn"])
def test_training_statistics_ignore_padding(name):
    """Batch-norm statistics come from real particles (and real edges) only."""
    torch.manual_seed(0)
    model = no_dropout(SMALL[name](7, 3)).train()
    x, v, mask = toy_batch()
    torch.testing.assert_close(model(x, v, mask), model(*pad(x, v, mask, 20)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", PERMUTATION_INVARIANT)
def test_permutation_invariance(name):
    torch.manual_seed(1)
    model = SMALL[name](7, 3).eval()
    x, v, mask = pad(*toy_batch(), 5)
    perm = torch.randperm(x.shape[1])  # real and padded particles mixed
    with torch.no_grad():
        permuted = model(x[:, perm], v[:, perm], mask[:, perm])
        torch.testing.assert_close(model(x, v, mask), permuted, atol=1e-5, rtol=1e-5)


def test_pcnn_depends_on_particle_order():
    torch.manual_seed(1)
    model = SMALL["pcnn"](7, 3).eval()
    x, v, mask = toy_batch()
    n = COUNTS[0]
    perm = torch.cat([torch.randperm(n), torch.arange(n, x.shape[1])])  # shuffle the real particles only
    with torch.no_grad():
        change = (model(x, v, mask) - model(x[:, perm], v[:, perm], mask[:, perm])).abs()
    assert change[0].max() > 1e-3  # the 40-particle jet is the only one with all particles shuffled


@pytest.mark.parametrize("name", list(SMALL))
def test_backbone_head_split_and_reset(name):
    model = SMALL[name](7, 3).eval()
    x, v, mask = toy_batch()
    with torch.no_grad():
        features = model.forward_features(x, v, mask)
        assert features.ndim == 2 and features.shape[0] == len(COUNTS)
        torch.testing.assert_close(model.forward_head(features), model(x, v, mask))
        assert model(x, v, mask).shape == (len(COUNTS), 3)
        model.reset_head(5)
        assert model(x, v, mask).shape == (len(COUNTS), 5)


@pytest.mark.parametrize("name", list(SMALL))
def test_gradients_reach_every_parameter(name):
    """One training step's gradient is finite and nonzero for every parameter (each one learns)."""
    torch.manual_seed(0)
    model = SMALL[name](7, 3).train()
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    F.cross_entropy(model(*toy_batch()), y).backward()
    missing = [n for n, p in model.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum() > 0]  # fmt: skip
    assert not missing


def test_angular_distances_wrap_phi():
    eta = np.array([0.1, -0.3, 0.4, 1.0])
    phi = np.array([3.1, -3.1, 0.0, -1.5])  # the first two are 0.083 apart across phi = +-pi
    pt = np.array([10.0, 5.0, 2.0, 1.0])
    v = np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta), pt * np.cosh(eta)], -1)
    dphi = np.abs(phi[:, None] - phi[None, :])
    dphi = np.minimum(dphi, 2 * np.pi - dphi)
    expected = (eta[:, None] - eta[None, :]) ** 2 + dphi**2
    got = angular_distances(torch.tensor(v[None], dtype=torch.float64)).numpy()[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("k", [3, 16])
def test_neighbours_are_the_nearest_real_particles(k):
    """Against a brute-force search: the min(k, n - 1) nearest other real particles, nothing else."""
    rng = np.random.default_rng(0)
    counts, length = [12, 5, 1], 15
    points = rng.normal(size=(3, length, 2))
    mask = np.arange(length)[None, :] < np.array(counts)[:, None]
    distances = ((points[:, :, None] - points[:, None, :]) ** 2).sum(-1)
    idx, valid = nearest_neighbours(torch.tensor(distances), torch.tensor(mask), k)
    idx, valid = idx.numpy(), valid.numpy()
    for b, n in enumerate(counts):
        for i in range(length):
            chosen = set(idx[b, i][valid[b, i]].tolist())
            if i >= n:
                assert not chosen
                continue
            others = [j for j in np.argsort(distances[b, i, :n]) if j != i]
            assert chosen == set(others[:k])


@pytest.mark.parametrize("k", [3, 16])
def test_reference_neighbours_fill_in_with_padded_slots(k):
    """weaver-core's rule against a brute-force search: the k nearest other particles of each real one,
    padded slots (index >= N, zero particles) making up the number when a jet has k or fewer."""
    rng = np.random.default_rng(0)
    counts, length = [12, 5, 1], 15
    points = rng.normal(size=(3, length, 2))
    mask = np.arange(length)[None, :] < np.array(counts)[:, None]
    distances = ((points[:, :, None] - points[:, None, :]) ** 2).sum(-1)
    idx, edges = reference_neighbours(torch.tensor(distances), torch.tensor(mask), k)
    assert idx.shape == (3, length, k)
    for b, n in enumerate(counts):
        for i in range(n):
            chosen = idx[b, i].tolist()
            others = [j for j in np.argsort(distances[b, i, :n]) if j != i][:k]
            assert sorted(j for j in chosen if j < length) == sorted(others)
            assert sum(j >= length for j in chosen) == k - len(
                others
            )  # padded slots, not the particle itself
        assert edges[b, :n].all() and not edges[b, n:].any()


def build_shipped(name: str, input_dim: int = 17, num_classes: int = 10) -> nn.Module:
    """A model config from configs/model/ composed as jettag-train composes it."""
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={name}"])
    return build_model(cfg.model, input_dim, num_classes)


# ParT paper (JetClass, full inputs: 17, 10 classes): parameters and "FLOPs" (multiply-adds) at 128 particles
PUBLISHED = {
    "pfn": (86.1e3, 4.62e6),
    "pcnn": (354e3, 15.5e6),
    "particlenet": (370e3, 540e6),
    "part_plain": (2.13e6, 260e6),
    "part": (2.14e6, 340e6),
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_shipped_configs_match_published_size_and_cost(name):
    params, macs = PUBLISHED[name]
    model = build_shipped(name)
    assert count_parameters(model) == pytest.approx(params, rel=0.005)
    assert count_macs(model, 17, 128) == pytest.approx(macs, rel=0.03)


def test_every_model_config_builds():
    shipped = sorted(p.stem for p in (config_dir() / "model").glob("*.yaml"))
    assert set(PUBLISHED) <= set(shipped)
    for name in shipped:
        assert build_shipped(name, 7, 2)(*toy_batch([3, 2])).shape == (2, 2)


def test_macs_by_hand_pfn():
    n, c, classes = 20, 7, 3
    model = ParticleFlowNetwork(c, classes, phi_dims=(16, 32), f_dims=(8,))
    assert count_macs(model, c, n) == n * (c * 16 + 16 * 32) + 32 * 8 + 8 * classes
    assert count_parameters(model) == (c * 16 + 16) + (16 * 32 + 32) + (32 * 8 + 8) + (8 * classes + classes)


def test_macs_by_hand_particlenet():
    n, c, k, classes = 20, 7, 4, 3
    model = ParticleNet(c, classes, conv_params=[(k, (16, 16)), (k, (24,))], fc_params=[(8, 0.1)])
    edges = n * k
    block1 = edges * (2 * c * 16 + 16 * 16) + n * c * 16  # edge MLP + shortcut
    block2 = n * n * 16 + edges * (2 * 16 * 24) + n * 16 * 24  # feature-space distances (matmul) + ...
    assert count_macs(model, c, n) == block1 + block2 + 24 * 8 + 8 * classes


def test_macs_by_hand_pcnn():
    n, c, classes = 20, 7, 3
    model = ParticleCNN(c, classes, conv_params=[(8,), (8,), (16,)], fc_params=[(8, 0.1)])
    stem = n * 3 * c * 8
    unit1 = 2 * n * 3 * 8 * 8  # same width: identity shortcut
    half = math.ceil(n / 2)
    unit2 = half * 3 * 8 * 16 + half * 3 * 16 * 16 + half * 8 * 16  # stride 2 + 1x1 shortcut
    assert count_macs(model, c, n) == stem + unit1 + unit2 + 16 * 8 + 8 * classes


def test_macs_count_fused_cpu_attention():
    """FlopCounterMode alone does not count the CPU attention kernel; count_macs must."""

    class Attend(nn.Module):
        def __init__(self):
            super().__init__()
            self.dummy = nn.Parameter(torch.zeros(1))

        def forward(self, x, v, mask):
            q = x.unflatten(-1, (2, -1)).transpose(1, 2)  # (1, heads, N, C / heads)
            return F.scaled_dot_product_attention(q, q, q, attn_mask=torch.zeros(x.shape[1], x.shape[1]))

    n, c = 30, 8
    assert count_macs(Attend(), c, n) == 2 * n * n * c  # Q K^T and A V, all heads


@pytest.mark.parametrize("name", ["particlenet", "pcnn"])
def test_masked_batch_norms_survive_sync_batchnorm(name):
    """`trainer=ddp` sets sync_batchnorm: Lightning turns every batch norm into nn.SyncBatchNorm. The
    masked statistics must survive that (same outputs in a single process, train and eval)."""
    torch.manual_seed(0)
    model = no_dropout(SMALL[name](7, 3))
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(model))
    assert any(isinstance(m, nn.SyncBatchNorm) for m in synced.modules())
    batch = toy_batch()
    for mode in (True, False):
        model.train(mode)
        synced.train(mode)
        with torch.no_grad():
            torch.testing.assert_close(synced(*batch), model(*batch), rtol=0, atol=0)
