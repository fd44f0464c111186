"""Particle Transformer: size, padding and permutation invariance, buckets, static and generic paths."""

import copy
import itertools
import os
import subprocess
import sys

import pytest
import torch

from jettag.errors import ConfigError
from jettag.models import ParticleTransformer
from jettag.models.part import ExecutionPath, PairEmbed, kernels, packing, plan_buckets
from jettag.models.part.path import resolve

CPU = ExecutionPath.CPU_KERNELS
SMALL = dict(embed_dims=(32, 64, 32), pair_embed_dims=(16, 16), num_heads=4, num_layers=2, num_cls_layers=1)


def jets_with_counts(counts, length, features, g):
    """Padded jets (x, v, mask) with counts[i] real particles first, collimated four-vectors."""
    batch = len(counts)
    mask = torch.arange(length)[None, :] < counts[:, None]
    x = torch.randn(batch, length, features, generator=g) * mask[..., None]
    pt = torch.rand(batch, length, generator=g) * 50 + 1
    eta = torch.randn(batch, length, generator=g) * 0.3
    phi = torch.randn(batch, length, generator=g) * 0.3
    v = torch.stack([pt * phi.cos(), pt * phi.sin(), pt * eta.sinh(), pt * eta.cosh()], -1) * mask[..., None]
    return x, v, mask


def toy_batch(batch=5, length=40, features=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return jets_with_counts(torch.tensor([40, 1, 17, 33, 8])[:batch], length, features, g)


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
    torch.testing.assert_close(
        model(*pad(x, v, mask, 64)), model(*pad(x, v, mask, 128)), atol=1e-5, rtol=1e-5
    )


def test_permutation_invariance():
    torch.manual_seed(1)
    model = ParticleTransformer(7, 3, **SMALL).eval()
    x, v, mask = toy_batch()
    perm = torch.randperm(x.shape[1])
    with torch.no_grad():
        torch.testing.assert_close(
            model(x, v, mask), model(x[:, perm], v[:, perm], mask[:, perm]), atol=1e-5, rtol=1e-5
        )


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


def many_jets(n_jets=48, length=100, features=7, seed=2):
    """Jets of 1..length particles (so a batch splits into several buckets), real particles first."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(1, length + 1, (n_jets,), generator=g)
    counts[0] = length
    return jets_with_counts(counts, length, features, g)


def test_bucket_plans():
    counts = sorted(
        torch.randint(1, 129, (64,), generator=torch.Generator().manual_seed(0)).tolist(), reverse=True
    )
    for packed in (True, False):
        buckets = plan_buckets(counts, packed)
        assert buckets[0].start == 0 and buckets[-1].stop == 64
        assert all(a.stop == b.start for a, b in itertools.pairwise(buckets))
        assert all(k.length == counts[k.start] for k in buckets)
        assert sum(k.num_pairs for k in buckets) == sum(n * (n + 1) // 2 for n in counts)
    assert len(plan_buckets(counts, packed=True)) > 1  # spread-out multiplicities are split
    assert len(plan_buckets([50] * 64, packed=False)) == 1  # nothing to gain


@pytest.mark.parametrize("interaction", [True, False])
def test_buckets_and_packing_do_not_change_scores(interaction, monkeypatch):
    torch.manual_seed(0)
    no_dropout = dict(dropout=0, attn_dropout=0, activation_dropout=0)
    model = ParticleTransformer(7, 3, use_interaction=interaction, **SMALL, **no_dropout)
    x, v, mask = many_jets()
    counts = sorted(mask.sum(1).tolist(), reverse=True)
    assert len(plan_buckets(counts, packed=True)) > 1 and len(plan_buckets(counts, packed=False)) > 1
    model.eval()
    with torch.no_grad():
        batch = model(x, v, mask)
        alone = torch.cat([model(x[i : i + 1, :n], v[i : i + 1, :n], mask[i : i + 1, :n])
                           for i, n in enumerate(mask.sum(1).tolist())])  # fmt: skip
        model.path = "dense"  # static shapes: the padded batch as given
        dense = model(x, v, mask)
        model.path = "auto"
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batch, dense, atol=1e-5, rtol=1e-5)
    # inference on packed tokens (chosen when the padded buckets would pad much) and on padded buckets
    for threshold in (0.0, 1e9):
        monkeypatch.setattr(packing, "PACK_ABOVE", threshold)
        with torch.no_grad():
            torch.testing.assert_close(model(x, v, mask), batch, atol=1e-5, rtol=1e-5)
    # training: packed tokens in buckets, batch statistics over real particles and pairs only
    model.train()
    torch.testing.assert_close(model(x, v, mask), model(*pad(x, v, mask, 160)), atol=1e-5, rtol=1e-5)


def test_generic_code_path_and_bf16_autocast():
    """The path GPUs take (SDPA, F.dropout, F.linear), run on the CPU; and bf16 autocast on it."""
    torch.manual_seed(0)
    model = ParticleTransformer(7, 3, **SMALL).eval()
    x, v, mask = many_jets(n_jets=24, length=60)
    with torch.no_grad():
        cpu_path = model(x, v, mask)
        model.path = "generic"
        generic = model(x, v, mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x, v, mask)
    torch.testing.assert_close(generic, cpu_path, atol=1e-5, rtol=1e-5)
    assert low.dtype == torch.bfloat16 and (low.float() - cpu_path).abs().max() < 0.1
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x, v, mask).float().logsumexp(-1).sum()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("final_activation", [True, False])
def test_train_mode_pair_embedding_in_a_workspace(final_activation):
    """The CPU training path of the pair MLP (hand-written backward, reused buffers) against autograd
    through the same layers, float64: outputs, every gradient and the running statistics."""
    torch.manual_seed(0)
    fused = PairEmbed((32, 32), 4, final_activation=final_activation).double().train()
    plain = copy.deepcopy(fused)
    features = torch.randn(3000, 4, dtype=torch.float64)
    weights = torch.randn(3000, 4, dtype=torch.float64)
    for step in range(2):  # the second step reuses the buffers of the first
        a, b = features[step:].clone().requires_grad_(), features[step:].clone().requires_grad_()
        out = fused.embed_training(a, ExecutionPath.CPU_KERNELS)
        expected = plain.embed_training(b, ExecutionPath.GENERIC)
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
        (out * weights[step:]).sum().backward()
        (expected * weights[step:]).sum().backward()
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)
    scale = max(p.grad.abs().max().item() for p in plain.parameters())
    for (name, ours), theirs in zip(fused.named_parameters(), plain.parameters(), strict=True):
        # biases before a train-mode batch norm have zero gradient: compare on the scale of all gradients
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-9, atol=1e-12 * scale, msg=name)
    for (name, ours), theirs in zip(fused.named_buffers(), plain.buffers(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12, msg=name)


def test_pair_embedding_workspaces_follow_the_autograd_graphs():
    embed = PairEmbed((8,), 2).train()
    first, second = (
        embed.embed_training(torch.randn(50, 4), CPU),
        embed.embed_training(torch.randn(60, 4), CPU),
    )
    assert len(kernels.WORKSPACES[embed]) == 2  # two graphs awaiting backward: two workspaces
    first.sum().backward()
    second.sum().backward()
    embed.embed_training(torch.randn(70, 4), CPU)  # reuses a freed one
    with torch.no_grad():
        embed.embed_training(torch.randn(70, 4), CPU)
    assert len(kernels.WORKSPACES[embed]) == 2
    copy.deepcopy(embed)  # the workspaces are not part of the module's state
    out = embed.embed_training(torch.randn(30, 4), CPU)
    out.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward pass per forward pass"):
        out.sum().backward()


def test_dropout_rate_and_seed():
    x = torch.ones(300, 1000)
    torch.manual_seed(3)
    a = kernels.dropout(x, 0.1, True, CPU)
    torch.manual_seed(3)
    b = kernels.dropout(x, 0.1, True, CPU)
    assert torch.equal(a, b)
    assert (a > 0).float().mean().item() == pytest.approx(0.9, abs=0.003)
    assert a.mean().item() == pytest.approx(1.0, abs=0.005)
    assert torch.equal(kernels.dropout(x, 0.1, False, CPU), x)
    # large draws are split over threads: still reproducible, still Bernoulli(0.9) throughout
    big = torch.ones(2, 3 * kernels.RNG_SPLIT)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the tests run with one
    try:
        torch.manual_seed(4)
        c = kernels.dropout(big, 0.1, True, CPU)
        torch.manual_seed(4)
        assert torch.equal(c, kernels.dropout(big, 0.1, True, CPU))
        assert kernels.rng_workers() == 2
    finally:
        torch.set_num_threads(threads)
    for half in c.flatten().chunk(2):
        assert (half > 0).float().mean().item() == pytest.approx(0.9, abs=0.001)


def test_native_gelu_forward_and_backward():
    """GELU on PyTorch's own kernels (not oneDNN's, which compile one kernel per shape) against the
    erf formula and its derivative, worked here in float64: x Phi(x), Phi(x) + x phi(x)."""
    x = torch.linspace(-6, 6, 1203, dtype=torch.float64).reshape(3, 401).requires_grad_()
    y = kernels.gelu_native(x)
    t = x.detach()
    cdf = 0.5 * (1 + torch.erf(t / 2**0.5))
    pdf = torch.exp(-0.5 * t**2) / (2 * torch.pi) ** 0.5
    torch.testing.assert_close(y.detach(), t * cdf, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(t)
    y.backward(grad)
    torch.testing.assert_close(x.grad, grad * (cdf + t * pdf), rtol=1e-12, atol=1e-12)
    assert torch._C._get_mkldnn_enabled()  # the switch is set back
    out = torch.empty_like(t)
    torch.testing.assert_close(kernels.gelu_out(t, out), t * cdf, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(kernels.gelu_backward_out(grad, t, torch.empty_like(t)), grad * (cdf + t * pdf),
                               rtol=1e-12, atol=1e-12)  # fmt: skip


def test_onednn_caches_are_bounded_unless_the_user_chose():
    names = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")
    code = f"import os, jettag.models.part.kernels; print(*(os.environ[k] for k in {names}))"
    env = {k: v for k, v in os.environ.items() if k not in names}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["16", "16"]
    out = subprocess.run([sys.executable, "-c", code], env={**env, "LRU_CACHE_CAPACITY": "200"},
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert out.stdout.split() == ["16", "200"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning")
@pytest.mark.parametrize("dynamo", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_onnx_export_of_the_static_path(dynamo, tmp_path):
    """Under export the model takes its static-shape path; batch and particle dims stay dynamic."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    model = ParticleTransformer(7, 3, **SMALL).eval()
    names = ["x", "v", "mask"]
    if dynamo:
        dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("particles")}
        dynamic = dict(dynamic_shapes={name: dims for name in names})
    else:
        dynamic = dict(dynamic_axes={name: {0: "batch", 1: "particles"} for name in names})
    torch.onnx.export(
        model, many_jets(6, 30), tmp_path / "part.onnx", input_names=names, dynamo=dynamo, **dynamic
    )
    session = ort.InferenceSession(str(tmp_path / "part.onnx"))
    x, v, mask = many_jets(9, 45, seed=5)  # other sizes than exported with
    got = session.run(None, {"x": x.numpy(), "v": v.numpy(), "mask": mask.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model(x, v, mask), atol=1e-5, rtol=1e-5)


def test_execution_path_is_a_model_attribute(monkeypatch):
    """`model.path` alone chooses how the work is done: every path gives the same scores, "dense" takes
    the static-shape pair embedding, "auto" resolves from the device, unknown values are refused."""
    torch.manual_seed(0)
    model = ParticleTransformer(7, 3, **SMALL).eval()
    assert model.path is ExecutionPath.AUTO
    assert ParticleTransformer(7, 3, **SMALL, path="generic").path is ExecutionPath.GENERIC
    assert resolve(ExecutionPath.AUTO, torch.device("cpu")) is ExecutionPath.CPU_KERNELS
    assert resolve(ExecutionPath.AUTO, torch.device("meta")) is ExecutionPath.GENERIC
    with pytest.raises(ConfigError, match="cpu_kernels needs the jets on a CPU"):
        resolve(ExecutionPath.CPU_KERNELS, torch.device("meta"))
    with pytest.raises(ConfigError, match=r"model\.path='fast' is not an execution path"):
        model.path = "fast"
    dense_calls = []
    forward_dense = model.pair_embed.forward_dense
    monkeypatch.setattr(
        model.pair_embed, "forward_dense", lambda *a: dense_calls.append(1) or forward_dense(*a)
    )
    x, v, mask = many_jets(n_jets=12, length=40)
    scores = {}
    with torch.no_grad():
        for path in ExecutionPath:
            model.path = path
            scores[path] = model(x, v, mask)
            assert len(dense_calls) == (path == "dense"), path
            dense_calls.clear()
    for path, got in scores.items():
        torch.testing.assert_close(got, scores[ExecutionPath.CPU_KERNELS], atol=1e-5, rtol=1e-5, msg=path)
    assert copy.deepcopy(model).path is ExecutionPath.DENSE
