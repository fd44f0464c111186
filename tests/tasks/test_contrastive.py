"""Contrastive pretraining (JetCLR-style): the NT-Xent loss and top-1 accuracy against the SimCLR
formula computed here, how the two views of a batch are stacked and paired, a loss that decreases on
a tiny set for ParT and the baselines (every model pretrains), what trains, validation views that are
the same in every epoch, and the settings that are refused. The jets are those of test_pretrain.py
(built with numpy, features computed there independently of the task)."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_finetune import SMALL
from test_pretrain import adamw, feature_set, jets, numpy_features
from torch import nn

from jettag.errors import ConfigError
from jettag.features.augment import Particles
from jettag.models import ParticleFlowNetwork, ParticleNet, ParticleTransformer
from jettag.tasks import ContrastivePretrainer
from jettag.tasks.contrastive import nt_xent, stack_views
from jettag.tasks.pretraining import eval_generator


def numpy_nt_xent(z1: np.ndarray, z2: np.ndarray, temperature: float) -> tuple[float, float]:
    """SimCLR (Chen et al. 2020, eq. 1): the mean over the 2B views i of
    -log( exp(sim(z_i, z_j) / T) / sum_{k != i} exp(sim(z_i, z_k) / T) ), j the other view of i's jet,
    sim the cosine similarity; and the fraction of views whose most similar other view is j."""
    z = np.concatenate([z1, z2]).astype(np.float64)
    n = len(z)
    losses, hits = [], []
    for i in range(n):
        j = (i + n // 2) % n
        sim = {k: z[i] @ z[k] / (np.linalg.norm(z[i]) * np.linalg.norm(z[k])) / temperature
               for k in range(n) if k != i}  # fmt: skip
        top = max(sim.values())
        log_denominator = top + math.log(sum(math.exp(s - top) for s in sim.values()))
        losses.append(-(sim[j] - log_denominator))
        hits.append(max(sim, key=sim.get) == j)
    return float(np.mean(losses)), float(np.mean(hits))


def test_nt_xent_against_the_simclr_formula():
    g = torch.Generator().manual_seed(0)
    for batch, width in ((5, 4), (8, 16), (1, 3)):
        z1, z2 = torch.randn(batch, width, generator=g), torch.randn(batch, width, generator=g)
        z2[: batch // 2] = z1[: batch // 2] + 0.3 * z2[: batch // 2]  # some pairs close together
        z1 = z1 * torch.rand(batch, 1, generator=g) * 5  # any length: only directions count
        for temperature in (0.07, 0.5, 2.0):
            loss, top1 = nt_xent(z1, z2, temperature)
            expected_loss, expected_top1 = numpy_nt_xent(z1.numpy(), z2.numpy(), temperature)
            assert float(loss) == pytest.approx(expected_loss, rel=1e-5)
            assert float(top1) == pytest.approx(expected_top1)


def test_nt_xent_by_hand():
    e1, e2, e3 = torch.eye(3)
    # two jets, both views equal and orthogonal to the other jet's, T = 1: each view sees cos 1 (its
    # partner) and 0, 0: loss = -log(e / (e + 2)) = log(e + 2) - 1; every nearest view is the partner
    loss, top1 = nt_xent(torch.stack([e1, e2]), torch.stack([e1, e2]), 1.0)
    assert float(loss) == pytest.approx(math.log(math.e + 2) - 1, rel=1e-6) and float(top1) == 1.0
    # views e1, e2, e3 | e1, e3, e2: the views of jet 0 find each other; jets 1 and 2 swapped their
    # second views, so each of their views finds the other jet's: 2 of 6
    _, top1 = nt_xent(torch.stack([e1, e2, e3]), torch.stack([e1, e3, e2]), 0.1)
    assert float(top1) == pytest.approx(2 / 6)
    # a gradient pulls the partners together
    z1 = torch.stack([e1, e2]).requires_grad_()
    nt_xent(z1, torch.stack([e1 + e2, e2 - e1]), 0.5)[0].backward()
    assert z1.grad is not None and z1.grad.abs().sum() > 0


def test_stack_views_pads_the_shorter_view():
    g = torch.Generator().manual_seed(2)
    short = Particles(torch.randn(3, 4, 2, generator=g), torch.randn(3, 4, 4, generator=g),
                      torch.rand(3, 4, generator=g) < 0.7)  # fmt: skip
    long = Particles(torch.randn(3, 6, 2, generator=g), torch.randn(3, 6, 4, generator=g),
                     torch.rand(3, 6, generator=g) < 0.7)  # fmt: skip
    x, v, mask = stack_views([short, long])
    assert x.shape == (6, 6, 2) and v.shape == (6, 6, 4) and mask.shape == (6, 6) and mask.dtype == torch.bool
    for name, stacked in (("x", x), ("v", v), ("mask", mask)):
        a, b = getattr(short, name).numpy(), getattr(long, name).numpy()
        widths = [(0, 0), (0, 2)] + [(0, 0)] * (a.ndim - 2)
        np.testing.assert_array_equal(stacked.numpy(), np.concatenate([np.pad(a, widths), b]))


def contrastive(model: nn.Module, features, seed: int = 0, **kwargs) -> ContrastivePretrainer:
    kwargs.setdefault("projection_dims", (32, 16))
    return ContrastivePretrainer(model, adamw(3e-3), features=features, **kwargs)


def test_views_are_recomputed_jets_paired_by_position():
    """The backbone sees the two views one after the other (view 1 of jet i in row i, view 2 in row
    B + i, as nt_xent pairs them), with the input features of the augmented four-momenta."""
    features = feature_set("kinpid")
    batch, _ = jets(features)
    torch.manual_seed(0)
    task = contrastive(ParticleTransformer(features.num_features, 2, **SMALL), features,
                       augmentations={"split": {"fraction": 0.5}})  # fmt: skip
    seen = []
    forward_features = task.model.forward_features

    def recorded(x, v, mask):
        seen.append((x.detach().clone(), v.detach().clone(), mask.clone()))
        return forward_features(x, v, mask)

    task.model.forward_features = recorded
    with torch.no_grad():
        task.loss(batch, torch.Generator().manual_seed(3))
    (x, v, mask), = seen  # fmt: skip  # one pass over both views
    assert len(x) == 12 and mask.sum() > batch.mask.sum() * 2  # some particles of view 2 were split
    v64, original = v.double(), batch.v.double()

    def scalar_pt_sum(p):
        return torch.hypot(p[..., 0], p[..., 1]).sum(1)

    # rotations, boosts, smearing and collinear splitting keep the scalar pT sum of a jet
    torch.testing.assert_close(scalar_pt_sum(v64[:6]), scalar_pt_sum(original), rtol=1e-5, atol=0)
    torch.testing.assert_close(scalar_pt_sum(v64[6:]), scalar_pt_sum(original), rtol=1e-5, atol=0)
    # view 1 (rotate, translate) keeps every particle's pT: the same sorted list as the jet
    pt = torch.hypot(v64[:6, :20, 0], v64[:6, :20, 1])
    torch.testing.assert_close(pt, torch.hypot(original[..., 0], original[..., 1]), rtol=1e-5, atol=1e-9)
    # each view's input features are those of its four-momenta (numpy), attributes travel with particles
    mask_np = mask.numpy()
    attributes = {name: x[..., c].numpy() for c, name in enumerate(features.names)}
    expected = numpy_features(features, v.numpy(), mask_np, attributes)
    np.testing.assert_allclose(x.numpy(), expected, atol=5e-5, rtol=0)
    assert (v[6:].abs().sum(-1) > 0).sum() == mask[6:].sum()


def small_models(num_features: int, names) -> dict:
    return {
        "part": lambda: ParticleTransformer(num_features, 2, **SMALL),
        "pfn": lambda: ParticleFlowNetwork(num_features, 2, phi_dims=(32, 32), f_dims=(32, 32)),
        "particlenet": lambda: ParticleNet(
            num_features,
            2,
            conv_params=((4, (16, 16)), (4, (32, 32))),
            fc_params=((32, 0.0),),
            feature_names=names,
        ),
    }


@pytest.mark.parametrize("name", ["part", "pfn", "particlenet"])
def test_loss_decreases_on_a_tiny_set_for_every_model(name):
    features = feature_set("kinpid")
    counts = [(20, 3, 12, 7, 20, 1, 15, 9), (18, 5, 11, 20, 2, 14, 8, 16)]
    data = [jets(features, counts=c, seed=s)[0] for s, c in enumerate(counts)]
    torch.manual_seed(1)
    task = contrastive(small_models(features.num_features, features.names)[name](), features)
    optimizer = task.configure_optimizers()
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert trained == {id(p) for n, p in task.named_parameters() if not n.startswith("model.head.")}
    head_before = [p.clone() for p in task.model.head.parameters()]

    def evaluate():
        task.eval()
        with torch.no_grad():
            values = [task.loss(b, eval_generator(k)) for k, b in enumerate(data)]
        task.train()
        return sum(float(loss) for loss, _ in values) / 2, sum(float(top1) for _, top1 in values) / 2

    first, _ = evaluate()
    for step in range(30):
        optimizer.zero_grad()
        loss, _ = task.loss(data[step % 2])
        loss.backward()
        if step == 0:
            grads = {n: p.grad for n, p in task.named_parameters()}
            for n, grad in grads.items():
                if n.startswith("model.head."):
                    assert grad is None, n  # the classifier head is not used
                else:
                    assert grad is not None and grad.abs().sum() > 0, n  # projection head and backbone
            assert any(n.startswith("projection.") for n in grads)
        optimizer.step()
    last, top1 = evaluate()
    assert last < 0.7 * first, (first, last)
    assert top1 > 0.5
    assert all(torch.equal(a, b) for a, b in zip(head_before, task.model.head.parameters(), strict=True))


def test_validation_views_are_the_same_in_every_epoch():
    features = feature_set("kinpid")
    data = [jets(features, seed=s)[0] for s in range(2)]
    torch.manual_seed(0)
    task = contrastive(ParticleTransformer(features.num_features, 2, **SMALL), features)
    # training draws new views at every step
    with torch.no_grad():
        assert float(task.loss(data[0])[0]) != float(task.loss(data[0])[0])

    def loader():
        return torch.utils.data.DataLoader(data, batch_size=None, collate_fn=lambda b: b)

    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)  # fmt: skip
    results = [trainer.validate(task, dataloaders=loader(), verbose=False)[0] for _ in range(2)]
    assert results[0] == results[1] and set(results[0]) == {"val/loss", "val/top1"}
    # the mean of the batches' losses with their batch index's draws
    task.eval()
    with torch.no_grad():
        expected = [float(task.loss(b, eval_generator(k))[0]) for k, b in enumerate(data)]
        other = float(task.loss(data[0], eval_generator(1))[0])
    assert results[0]["val/loss"] == pytest.approx(np.mean(expected), rel=1e-6)
    assert other != expected[0]  # batches of another index get other views


def test_checkpoint_record():
    features = feature_set("kin")
    task = contrastive(ParticleFlowNetwork(features.num_features, 1), features, temperature=0.2,
                       class_names=["unlabelled"])  # fmt: skip
    task.run_config = {"seed": 3}
    checkpoint = {}
    task.on_save_checkpoint(checkpoint)
    record = checkpoint["jettag"]
    assert record["objective"] == "contrastive (NT-Xent)" and record["config"] == {"seed": 3}
    assert record["temperature"] == 0.2 and record["class_names"] == ["unlabelled"]
    assert record["views"] == [["rotate", "translate"], ["rotate", "translate", "smear", "split"]]


def test_bad_settings_are_one_sentence():
    features = feature_set("kinpid")

    def build(**kwargs):
        return contrastive(ParticleFlowNetwork(features.num_features, 2), features, **kwargs)

    for temperature in (0.0, -0.1):
        with pytest.raises(ConfigError, match=r"task\.temperature=.* must be positive"):
            build(temperature=temperature)
    for views in ([["rotate"]], [["rotate"], ["smear"], ["split"]], []):
        with pytest.raises(ConfigError, match=rf"task\.views lists {len(views)} views; .* two"):
            build(views=views)
    with pytest.raises(ConfigError, match=r"task\.views\[1\]: 'rotation' is not an augmentation"):
        build(views=[["rotate"], ["rotation"]])
    with pytest.raises(ConfigError, match=r"task\.augmentations\.boost is not an augmentation"):
        build(augmentations={"boost": {}})
    for dims in ([], [32, 0]):
        with pytest.raises(ConfigError, match=r"task\.projection_dims"):
            build(projection_dims=dims)
    with pytest.raises(ConfigError, match="jettag's models"):
        ContrastivePretrainer(nn.Linear(3, 3), adamw(), features=features)
    with pytest.raises(ConfigError, match="feature set"):
        ContrastivePretrainer(ParticleFlowNetwork(13, 2), adamw(), features=None)


def test_two_layer_projection_head():
    features = feature_set("kin")
    task = contrastive(ParticleFlowNetwork(features.num_features, 2, f_dims=(24,)), features,
                       projection_dims=(64, 8))  # fmt: skip
    layers = [m for m in task.projection if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in layers] == [(24, 64), (64, 8)]
    assert isinstance(task.projection[1], nn.ReLU) and len(task.projection) == 3
    z = torch.randn(4, 24)
    expected = F.linear(
        F.relu(F.linear(z, layers[0].weight, layers[0].bias)), layers[1].weight, layers[1].bias
    )
    torch.testing.assert_close(task.projection(z), expected)
