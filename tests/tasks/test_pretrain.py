"""Masked particle modelling: per-particle tokens, what a masked particle still shows, and a loss that
decreases on a tiny set."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from test_finetune import SMALL, toy_batch

from jettag.errors import ConfigError
from jettag.models import ParticleTransformer
from jettag.tasks import MaskedParticlePretrainer
from jettag.tasks.pretrain import mask_particles

KIN = ["part_pt_log", "part_e_log", "part_logptrel", "part_logerel", "part_deltaR", "part_deta", "part_dphi"]


def pretrainer(seed=0, **kwargs):
    torch.manual_seed(seed)
    model = ParticleTransformer(input_dim=7, num_classes=2, **SMALL)
    optimizer = functools.partial(torch.optim.AdamW, lr=3e-3, weight_decay=0.0)
    return MaskedParticlePretrainer(model, optimizer, feature_names=[[n, None] for n in KIN], **kwargs)


def test_forward_tokens_are_those_of_each_jet_alone():
    model = ParticleTransformer(input_dim=7, num_classes=2, **SMALL).eval()
    batch = toy_batch()
    with torch.no_grad():
        tokens = model.forward_tokens(batch.x, batch.v, batch.mask)
        assert tokens.shape == (6, 20, 32)
        for i in range(6):
            n = int(batch.mask[i].sum())
            alone = model.forward_tokens(batch.x[i : i + 1, :n], batch.v[i : i + 1, :n],
                                         batch.mask[i : i + 1, :n])  # fmt: skip
            torch.testing.assert_close(tokens[i, :n], alone[0], atol=2e-5, rtol=1e-4)
            assert torch.all(tokens[i, n:] == 0)


def test_masked_particles_keep_only_their_direction():
    task = pretrainer(masked_pt=2.0)
    with torch.no_grad():
        task.mask_value.copy_(torch.arange(7.0) + 100)
    batch = toy_batch()
    masked = mask_particles(batch.mask, 0.5, torch.Generator().manual_seed(3))
    assert torch.all(masked.sum(1) >= 1) and not torch.any(masked & ~batch.mask)
    with torch.no_grad():
        x_in, v_in = task.masked_inputs(batch.x, batch.v, masked)
    x, x_new = batch.x.numpy(), x_in.numpy()
    m = masked.numpy()
    hidden = [0, 1, 2, 3]  # everything but deltaR, deta, dphi
    np.testing.assert_array_equal(x_new[m][:, hidden], np.broadcast_to(np.arange(4.0) + 100, (m.sum(), 4)))
    np.testing.assert_array_equal(x_new[m][:, 4:], x[m][:, 4:])
    np.testing.assert_array_equal(x_new[~m], x[~m])
    # four-vectors: massless, pT 2 GeV, same pseudorapidity and azimuth (worked out with numpy)
    v, w = batch.v.numpy()[m].astype(np.float64), v_in.numpy()[m].astype(np.float64)
    pt_v, pt_w = np.hypot(v[:, 0], v[:, 1]), np.hypot(w[:, 0], w[:, 1])
    np.testing.assert_allclose(pt_w, 2.0, rtol=1e-5)
    np.testing.assert_allclose(np.arctan2(w[:, 1], w[:, 0]), np.arctan2(v[:, 1], v[:, 0]), atol=1e-5)
    np.testing.assert_allclose(np.arcsinh(w[:, 2] / pt_w), np.arcsinh(v[:, 2] / pt_v), atol=1e-5)
    np.testing.assert_allclose(w[:, 3] ** 2 - (w[:, :3] ** 2).sum(1), 0, atol=1e-4)
    np.testing.assert_array_equal(v_in.numpy()[~m], batch.v.numpy()[~m])


def test_pretraining_loss_decreases_on_a_tiny_set():
    task = pretrainer(mask_fraction=0.3)
    task.train()
    optimizer = task.configure_optimizers()  # no scheduler given
    batch = toy_batch()

    def loss():
        return task.loss(batch, torch.Generator().manual_seed(0))

    with torch.no_grad():
        first = float(loss())
    for _ in range(40):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    with torch.no_grad():
        last = float(loss())
    assert last < 0.5 * first, (first, last)
    # what the optimizer trains: the backbone, the decoder and the mask vector, not the unused head
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert id(task.mask_value) in trained and id(task.decoder[1].weight) in trained
    assert id(task.model.head.weight) not in trained


def test_bad_settings_are_one_sentence():
    with pytest.raises(ConfigError, match="part_eta is not one of the input features"):
        pretrainer(visible_features=["part_eta"])
    with pytest.raises(ConfigError, match="mask_fraction"):
        pretrainer(mask_fraction=1.0)
    with pytest.raises(ConfigError, match=r"task\.loss='l2'"):
        pretrainer(loss="l2")
