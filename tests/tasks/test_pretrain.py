"""Masked particle modelling (MPMv2): which particles are masked, how the visible ones are compacted,
that nothing of a masked particle reaches the encoder or the decoder's inputs, the identity classes,
the loss terms worked out here from the batch, a loss that decreases on a tiny set (with and without
classification), what trains, the warm-up + cosine schedule, and the settings that are refused.

The jets of these tests are built here with numpy (`jets`): particles in decreasing pT with a mass,
a charge and PID flags of a real particle kind, and input features computed here
(`numpy_features`) from the loader's definitions, independently of `jettag.features.recompute`.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
import yaml
from test_finetune import SMALL, toy_batch

from jettag.data import JetBatch
from jettag.errors import ConfigError
from jettag.features.sets import FeatureSet
from jettag.models import ParticleFlowNetwork, ParticleTransformer
from jettag.paths import config_dir
from jettag.tasks import MaskedParticlePretrainer, warmup_cosine
from jettag.tasks.pretrain import compact, mask_particles

COUNTS = (20, 3, 12, 7, 20, 1)  # particles per jet, one one-particle jet among them
# particle kinds: (charge, PID flag); the identity classes of MPMv2 in this order
KINDS = [
    (0, "part_isPhoton"),
    (0, "part_isNeutralHadron"),
    (1, "part_isChargedHadron"),
    (-1, "part_isChargedHadron"),
    (1, "part_isElectron"),
    (-1, "part_isElectron"),
    (1, "part_isMuon"),
    (-1, "part_isMuon"),
]
FLAGS = ("part_isChargedHadron", "part_isNeutralHadron", "part_isPhoton", "part_isElectron", "part_isMuon")


def feature_set(name: str = "kinpid", max_particles: int = 32, extra=()) -> FeatureSet:
    """A shipped feature set (configs/features/<name>.yaml) with `extra` entries appended."""
    cfg = yaml.safe_load((config_dir() / "features" / f"{name}.yaml").read_text())
    cfg["max_particles"] = max_particles
    cfg["particle_features"] += list(extra)
    return FeatureSet.from_config(cfg)


def numpy_kinematics(p: np.ndarray) -> dict[str, np.ndarray]:
    """The loader's kinematic variables of one jet's particles p (n, 4) (px, py, pz, E), float64: the jet
    axis is the sum of the particles, deta is signed by the jet's eta, dphi wrapped into [-pi, pi)."""
    jet = p.sum(0)
    jet_pt, pt = math.hypot(jet[0], jet[1]), np.hypot(p[:, 0], p[:, 1])
    jet_eta, eta = math.asinh(jet[2] / jet_pt), np.arcsinh(p[:, 2] / pt)
    jet_phi, phi = math.atan2(jet[1], jet[0]), np.arctan2(p[:, 1], p[:, 0])
    deta = (eta - jet_eta) * (1.0 if jet_eta >= 0 else -1.0)
    dphi = (phi - jet_phi + math.pi) % (2 * math.pi) - math.pi
    return {
        "part_pt_log": np.log(pt),
        "part_e_log": np.log(p[:, 3]),
        "part_logptrel": np.log(pt / jet_pt),
        "part_logerel": np.log(p[:, 3] / jet[3]),
        "part_deltaR": np.hypot(deta, dphi),
        "part_deta": deta,
        "part_dphi": dphi,
    }


def numpy_features(features: FeatureSet, v: np.ndarray, mask: np.ndarray, attributes: dict) -> np.ndarray:
    """Standardized inputs (B, N, C) of jets v (B, N, 4): kinematic columns from the four-momenta,
    the others from `attributes` (name -> (B, N)); zero at padding."""
    x = np.zeros((*mask.shape, features.num_features))
    for i in range(len(v)):
        keep = mask[i]
        kinematic = numpy_kinematics(v[i][keep].astype(np.float64))
        for c, f in enumerate(features.features):
            value = kinematic[f.name] if f.name in kinematic else attributes[f.name][i][keep]
            if f.center is not None:
                value = np.clip((value - f.center) * f.scale, f.lo, f.hi)
            x[i, keep, c] = value
    return x


def jets(features: FeatureSet, counts=COUNTS, length: int = 20, seed: int = 0):
    """(JetBatch, kind (B, N) index into KINDS): jets as the loader gives them (see the module docstring)."""
    rng = np.random.default_rng(seed)
    batch = len(counts)
    mask = np.arange(length)[None] < np.array(counts)[:, None]
    pt = -np.sort(-rng.uniform(1.0, 60.0, (batch, length)), 1)
    eta = rng.uniform(-1.5, 1.5, (batch, 1)) + rng.normal(0, 0.2, (batch, length))
    phi = rng.uniform(-math.pi, math.pi, (batch, 1)) + rng.normal(0, 0.2, (batch, length))
    mass = rng.uniform(0.0, 0.5, (batch, length))
    energy = np.sqrt((pt * np.cosh(eta)) ** 2 + mass**2)
    v = np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta), energy], -1) * mask[..., None]
    v = v.astype(np.float32)
    kind = np.where(mask, rng.integers(0, len(KINDS), (batch, length)), 0)
    attributes = {"part_charge": np.array([KINDS[k][0] for k in kind.ravel()], float).reshape(kind.shape)}
    for flag in FLAGS:
        attributes[flag] = np.array([KINDS[k][1] == flag for k in kind.ravel()], float).reshape(kind.shape)
    x = numpy_features(features, v, mask, {k: a * mask for k, a in attributes.items()})
    y = torch.as_tensor(rng.integers(0, 2, batch))
    jet_batch = JetBatch(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(v), torch.as_tensor(mask), y,
                         weight=torch.ones(batch), entry=torch.arange(batch))  # fmt: skip
    return jet_batch, kind


def adamw(lr: float = 3e-3):
    return functools.partial(torch.optim.AdamW, lr=lr, weight_decay=0.0)


def pretrainer(features: FeatureSet | None = None, seed: int = 0, num_classes: int = 2, **kwargs):
    features = features or feature_set()
    torch.manual_seed(seed)
    model = ParticleTransformer(features.num_features, num_classes, **SMALL)
    kwargs.setdefault("decoder_dim", 32)
    return MaskedParticlePretrainer(model, adamw(), features=features, **kwargs)


def test_mask_particles_fraction_padding_and_at_least_one_of_each():
    rng = np.random.default_rng(0)
    counts = torch.as_tensor(rng.integers(10, 101, 400))
    mask = torch.arange(100)[None] < counts[:, None]
    for k, fraction in enumerate((0.15, 0.4, 0.75)):
        masked = mask_particles(mask, fraction, torch.Generator().manual_seed(k))
        assert masked.dtype == torch.bool and masked.shape == mask.shape
        assert not (masked & ~mask).any()  # never padding
        assert float(masked.sum() / mask.sum()) == pytest.approx(fraction, abs=0.015)
        # the same draws for the same generator state
        assert torch.equal(masked, mask_particles(mask, fraction, torch.Generator().manual_seed(k)))
    # small jets at extreme fractions: >= 1 masked and >= 1 visible in every jet of two or more particles
    counts = torch.as_tensor(rng.integers(1, 5, 300))
    mask = torch.arange(6)[None] < counts[:, None]
    for fraction in (0.01, 0.5, 0.99):
        for seed in range(5):
            masked = mask_particles(mask, fraction, torch.Generator().manual_seed(seed))
            assert not (masked & ~mask).any()
            several = counts >= 2
            assert (masked.sum(1)[several] >= 1).all() and ((mask & ~masked).sum(1)[several] >= 1).all()
            assert not masked[counts == 1].any()  # a one-particle jet keeps its particle visible
    # empty jets stay empty
    assert not mask_particles(torch.zeros(3, 4, dtype=torch.bool), 0.5).any()


def test_compact_moves_the_kept_particles_to_the_front_in_order():
    g = torch.Generator().manual_seed(1)
    keep = torch.rand(7, 9, generator=g) < 0.5
    keep[2] = False  # a jet without kept particles
    keep[4] = True
    x, v = torch.randn(7, 9, 3, generator=g), torch.randn(7, 9, 4, generator=g)
    new_mask, x_new, v_new = compact(keep, x, v)
    # numpy: a loop over the jets
    length = max(int(k.sum()) for k in keep)
    expected_x, expected_v = np.zeros((7, length, 3), np.float32), np.zeros((7, length, 4), np.float32)
    expected_mask = np.zeros((7, length), bool)
    for i in range(7):
        rows = [j for j in range(9) if keep[i, j]]
        for slot, j in enumerate(rows):
            expected_x[i, slot], expected_v[i, slot], expected_mask[i, slot] = x[i, j], v[i, j], True
    assert length == 9
    np.testing.assert_array_equal(new_mask.numpy(), expected_mask)
    np.testing.assert_array_equal(x_new.numpy(), expected_x)
    np.testing.assert_array_equal(v_new.numpy(), expected_v)
    # cut to the longest jet
    keep[4] = keep[4] & (torch.arange(9) < 5)
    keep[:, 6:] = False
    new_mask, x_new = compact(keep, x)
    assert new_mask.shape == (7, int(keep.sum(1).max())) and x_new.shape == (7, new_mask.shape[1], 3)


def _other_particles(batch: JetBatch, masked: torch.Tensor, seed: int) -> JetBatch:
    """The batch with every masked particle replaced: other momentum, mass, direction and attributes."""
    g = torch.Generator().manual_seed(seed)
    n = int(masked.sum())
    pt = torch.rand(n, generator=g, dtype=torch.float64) * 500 + 0.5
    eta, phi = torch.randn(n, generator=g, dtype=torch.float64) * 2, torch.rand(n, generator=g) * 6.0 - 3.0
    mass = torch.rand(n, generator=g, dtype=torch.float64) * 5
    p = torch.stack([pt * phi.cos(), pt * phi.sin(), pt * eta.sinh(), torch.hypot(pt * eta.cosh(), mass)], -1)
    x, v = batch.x.clone(), batch.v.clone()
    x[masked] = torch.randn(n, x.shape[-1], generator=g) * 3
    v[masked] = p.float()
    return JetBatch(x, v, batch.mask, batch.y, batch.weight, batch.entry)


class Recorder:
    """What the encoder returns and what the decoder and the prediction layers receive in `losses`."""

    def __init__(self, task: MaskedParticlePretrainer):
        self.seen: dict[str, list] = {}
        forward_tokens = task.model.forward_tokens

        def recorded(*args, **kwargs):
            out = forward_tokens(*args, **kwargs)
            self.seen.setdefault("encoder", []).append([t.detach().clone() for t in out])
            return out

        task.model.forward_tokens = recorded  # an instance attribute: this task's model only
        task.decoder.register_forward_pre_hook(self._decoder_input, with_kwargs=True)
        task.predict_continuous.register_forward_hook(self._output("continuous"))
        if task.predict_identity is not None:
            task.predict_identity.register_forward_hook(self._output("identity"))

    def _decoder_input(self, module, args, kwargs):
        padding = kwargs.get("src_key_padding_mask", args[2] if len(args) > 2 else None)
        self.seen.setdefault("decoder", []).append([args[0].detach().clone(), padding.clone()])

    def _output(self, name):
        def hook(module, args, output):
            self.seen.setdefault(name, []).append(output.detach().clone())

        return hook


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_masked_particles_do_not_leak_into_the_encoder_or_the_decoder_inputs(mode):
    features = feature_set("kinpid")
    task = pretrainer(features)
    task.train(mode == "train")
    batch, _ = jets(features)
    x, v, mask = batch.inputs
    masked = mask_particles(mask, 0.4, torch.Generator().manual_seed(5))
    assert masked.sum() >= 10
    other = _other_particles(batch, masked, seed=9)
    assert not torch.equal(other.v, batch.v) and not torch.equal(other.x, batch.x)

    # the encoder's input: bit for bit the same, whatever the masked particles were
    first = task.encoder_inputs(x, v, mask, masked)
    second = task.encoder_inputs(other.x, other.v, mask, masked)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
    # and it is the jet of the visible particles alone, its features computed among them (numpy)
    x_vis, v_vis, visible = first
    visible_counts = (mask & ~masked).sum(1)
    assert visible.shape == (6, int(visible_counts.max()))
    columns = {name: c for c, name in enumerate(features.names)}
    for i in range(6):
        keep, n = (mask & ~masked)[i], int(visible_counts[i])
        assert visible[i].tolist() == [True] * n + [False] * (visible.shape[1] - n)
        assert torch.equal(v_vis[i, :n], v[i][keep]) and not v_vis[i, n:].any() and not x_vis[i, n:].any()
        attributes = {name: x[i][keep][None, :, c].numpy() for name, c in columns.items()}
        expected = numpy_features(features, v[i][keep][None].numpy(), np.ones((1, n), bool), attributes)[0]
        np.testing.assert_allclose(x_vis[i, :n].numpy(), expected, atol=2e-5, rtol=0)

    # through the task: the same encoder output, decoder input and predictions; only the targets differ
    recorder = Recorder(task)
    losses = []
    for b in (batch, other, batch):
        torch.manual_seed(0)  # the same dropout draws in train mode
        with torch.no_grad():
            losses.append(task.losses(b, torch.Generator().manual_seed(5)))
    seen = recorder.seen
    assert seen["continuous"][0].shape == (int(masked.sum()), len(task.target_names))
    for name in ("encoder", "decoder"):
        for a, b in zip(seen[name][0], seen[name][1], strict=True):
            assert torch.equal(a, b), name
    assert torch.equal(seen["continuous"][0], seen["continuous"][1])
    assert torch.equal(seen["identity"][0], seen["identity"][1])
    assert float(losses[0]["continuous"]) != float(losses[1]["continuous"])
    # the decoder's input: the jet token, then one slot per particle of the whole jet
    decoder_input, padding = seen["decoder"][0]
    assert (
        decoder_input.shape == (6, 21, 32) and torch.equal(padding[:, 1:], ~mask) and not padding[:, 0].any()
    )
    # slot by slot: the jet token (the encoder's pooled output), then in each particle's slot its token
    # (visible) or the placeholder (masked), plus the embedding of the particle's pT rank in the jet
    tokens, pooled = seen["encoder"][0]
    with torch.no_grad():
        rank = task.rank.weight
        torch.testing.assert_close(
            decoder_input[:, 0], task.jet_to_decoder(pooled) + rank[-1], atol=1e-6, rtol=0
        )
        for i in range(6):
            slot = 0
            for j in range(int(mask[i].sum())):
                if masked[i, j]:
                    expected = task.placeholder + rank[j]
                else:
                    expected, slot = task.encoder_to_decoder(tokens[i, slot]) + rank[j], slot + 1
                torch.testing.assert_close(decoder_input[i, 1 + j], expected, atol=1e-6, rtol=0)
    # a control: a visible particle that moves does change what the decoder receives
    changed = batch.v.clone()
    first_visible = torch.nonzero(mask[0] & ~masked[0])[0, 0]
    changed[0, first_visible] *= 1.5
    torch.manual_seed(0)
    with torch.no_grad():
        task.losses(JetBatch(batch.x, changed, mask, batch.y, batch.weight, batch.entry),
                    torch.Generator().manual_seed(5))  # fmt: skip
    assert not torch.equal(seen["decoder"][-1][0], seen["decoder"][0][0])


def test_forward_tokens_with_features_equals_the_two_calls():
    features = feature_set("kinpid")
    batch, _ = jets(features)
    torch.manual_seed(3)
    model = ParticleTransformer(features.num_features, 4, **SMALL).eval()
    other = toy_batch()  # random inputs of 7 columns
    torch.manual_seed(3)
    model7 = ParticleTransformer(7, 4, **SMALL).eval()
    with torch.no_grad():
        for m, b in ((model, batch), (model7, other)):
            tokens, pooled = m.forward_tokens(*b.inputs, features=True)
            assert tokens.shape == (6, 20, 32) and pooled.shape == (6, 32)
            torch.testing.assert_close(tokens, m.forward_tokens(*b.inputs), atol=1e-5, rtol=0)
            torch.testing.assert_close(pooled, m.forward_features(*b.inputs), atol=1e-5, rtol=0)
            assert not tokens[~b.mask].any()


def test_identity_classes_of_hand_made_particles():
    # kinpid: photon, neutral hadron, h+, h-, e+, e-, mu+, mu-
    features = feature_set("kinpid")
    task = pretrainer(features)
    assert task.id_classes == ("photon", "neutral hadron", "h+", "h-", "e+", "e-", "mu+", "mu-")
    assert task.target_names == ["part_pt_log", "part_e_log", "part_logptrel", "part_logerel", "part_deltaR",
                                 "part_deta", "part_dphi"]  # fmt: skip
    x = torch.randn(2, 8, features.num_features)  # kinematic columns: anything
    for k, (charge, flag) in enumerate(KINDS):
        x[:, k, features.names.index("part_charge")] = charge
        for name in FLAGS:
            x[:, k, features.names.index(name)] = float(name == flag)
    assert task.identity(x).tolist() == [list(range(8))] * 2
    assert task.identity(x[0]).tolist() == list(range(8))  # (M, C): the masked particles of a batch

    # a charge column only: the three charge classes
    features = feature_set("kin", extra=[["part_charge", None]])
    task = pretrainer(features)
    assert task.id_classes == ("-", "0", "+") and task.predict_identity.out_features == 3
    x = torch.randn(5, features.num_features)
    x[:, -1] = torch.tensor([-1.0, 0.0, 1.0, 1.0, 0.0])
    assert task.identity(x).tolist() == [0, 1, 2, 2, 1]

    # kin: no charge, no PID: no identity term
    features = feature_set("kin")
    task = pretrainer(features)
    assert task.identity is None and task.predict_identity is None and task.id_classes == ()
    batch, _ = jets(features)
    with torch.no_grad():
        losses = task.losses(batch, torch.Generator().manual_seed(0))
    assert set(losses) == {"continuous", "loss"} and float(losses["loss"]) == float(losses["continuous"])


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(1, keepdims=True))


def test_loss_terms_worked_out_from_the_batch():
    """L1 over the masked particles' continuous inputs, identity cross-entropy x id_weight, and the
    classifier's cross-entropy on the whole jet x classification_weight, from the predictions."""
    features = feature_set("kinpid")
    batch, kind = jets(features, seed=4)
    task = pretrainer(features, classification_weight=2.0, id_weight=0.3, class_names=["a", "b"]).eval()
    recorder = Recorder(task)
    with torch.no_grad():
        losses = task.losses(batch, torch.Generator().manual_seed(8))
        logits = task.model(*batch.inputs).double().numpy()
    masked = mask_particles(batch.mask, 0.4, torch.Generator().manual_seed(8)).numpy()
    rows = [(i, j) for i in range(6) for j in range(20) if masked[i, j]]  # the masked particles, jet by jet
    continuous = [c for c, name in enumerate(features.names) if name not in ("part_charge", *FLAGS)]
    assert continuous == [0, 1, 2, 3, 4, 11, 12]
    targets = np.array([batch.x[i, j, continuous].numpy() for i, j in rows], np.float64)
    predicted = recorder.seen["continuous"][0].double().numpy()
    l1 = np.abs(predicted - targets).mean()
    identity = np.array([kind[i, j] for i, j in rows])
    id_logits = recorder.seen["identity"][0].double().numpy()
    id_ce = -_log_softmax(id_logits)[np.arange(len(rows)), identity].mean()
    y = batch.y.numpy()
    cls_ce = -_log_softmax(logits)[np.arange(6), y].mean()
    assert float(losses["continuous"]) == pytest.approx(l1, rel=1e-5)
    assert float(losses["identity"]) == pytest.approx(id_ce, rel=1e-5)
    assert float(losses["classification"]) == pytest.approx(cls_ce, rel=1e-5)
    assert float(losses["loss"]) == pytest.approx(l1 + 0.3 * id_ce + 2.0 * cls_ce, rel=1e-5)


GENERATED = ("decoder.", "placeholder", "rank.", "encoder_to_decoder.", "jet_to_decoder.", "model.cls_blocks.",
             "model.cls_token", "model.norm.", "model.blocks.", "model.embed.", "model.pair_embed.",
             "predict_continuous.", "predict_identity.")  # fmt: skip


@pytest.mark.parametrize("classification", [False, True])
def test_loss_decreases_on_a_tiny_set_and_what_trains(classification):
    features = feature_set("kinpid")
    data = [jets(features, seed=s)[0] for s in range(2)]
    kwargs = dict(classification_weight=1.0, class_names=["a", "b"]) if classification else {}
    task = pretrainer(features, seed=1, **kwargs)
    optimizer = task.configure_optimizers()  # no scheduler given
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    head = [id(p) for p in task.model.head.parameters()]
    others = [p for n, p in task.named_parameters() if not n.startswith("model.head.")]
    assert all(id(p) in trained for p in others)
    assert all((i in trained) == classification for i in head)  # the head trains with classification only
    head_before = [p.clone() for p in task.model.head.parameters()]

    def evaluate():
        task.eval()
        with torch.no_grad():
            terms = [task.losses(b, torch.Generator().manual_seed(k)) for k, b in enumerate(data)]
        task.train()
        return {name: sum(float(t[name]) for t in terms) / len(terms) for name in terms[0]}

    first = evaluate()
    for step in range(30):
        optimizer.zero_grad()
        losses = task.losses(data[step % 2])
        losses["loss"].backward()
        if step == 0:  # what gets gradients
            grads = {n: p.grad for n, p in task.named_parameters()}
            for prefix in GENERATED:
                named = [n for n in grads if n.startswith(prefix)]
                assert named and all(grads[n] is not None and grads[n].abs().sum() > 0 for n in named), prefix
            assert all((grads[n] is not None) == classification for n in grads if n.startswith("model.head."))
        optimizer.step()
    last = evaluate()
    assert last["loss"] < 0.7 * first["loss"], (first, last)
    assert last["continuous"] < first["continuous"] and last["identity"] < first["identity"], (first, last)
    if classification:
        assert last["classification"] < 0.5 * first["classification"], (first, last)
    else:
        assert "classification" not in last
        assert all(torch.equal(a, b) for a, b in zip(head_before, task.model.head.parameters(), strict=True))


def test_trains_under_bf16_autocast():
    """trainer=gpu trains in bf16-mixed: the decoder's input mixes bf16 tokens with float32 placeholders."""
    features = feature_set("kinpid")
    batch, _ = jets(features)
    task = pretrainer(features, classification_weight=1.0, class_names=["a", "b"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = task.losses(batch, torch.Generator().manual_seed(0))
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"]) and task.placeholder.grad is not None


def test_checkpoint_record_names_the_objective():
    task = pretrainer(feature_set("kinpid"), classification_weight=0.5, class_names=["a", "b"])
    task.run_config = {"seed": 1}
    checkpoint = {}
    task.on_save_checkpoint(checkpoint)
    record = checkpoint["jettag"]
    assert record["config"] == {"seed": 1} and record["class_names"] == ["a", "b"]
    assert record["objective"] == "masked particle modelling (MPMv2) + classification"
    assert record["identity_classes"][2] == "h+" and record["targets"][0] == "part_pt_log"


def test_warmup_cosine_factors_step_by_step():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=2.0)
    scheduler = warmup_cosine(optimizer, total_steps=20, warmup_fraction=0.1, final_factor=0.01)
    lrs = []
    for _ in range(20):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # two warm-up steps (lr x 1/2, x 1), then a cosine over steps 2..19, from 1 to 0.01 at the last step
    expected = [0.5, 1.0] + [0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (s - 2) / 17)) for s in range(2, 20)]
    np.testing.assert_allclose(lrs, 2.0 * np.array(expected), rtol=1e-12)
    assert lrs[-1] == pytest.approx(0.02)
    with pytest.raises(ConfigError, match="warmup_fraction"):
        warmup_cosine(optimizer, total_steps=20, warmup_fraction=1.0)


def test_bad_settings_are_one_sentence():
    features = feature_set("kinpid")
    pfn = ParticleFlowNetwork(features.num_features, 2)
    with pytest.raises(ConfigError, match=r"needs a ParticleTransformer .*not ParticleFlowNetwork"):
        MaskedParticlePretrainer(pfn, adamw(), features=features)
    for fraction in (0.0, 1.0, -0.2, 1.5):
        with pytest.raises(ConfigError, match=r"task\.mask_fraction"):
            pretrainer(features, mask_fraction=fraction)
    for class_names in ([], ["unlabelled"]):  # data.labels=null gives the one class 'unlabelled'
        with pytest.raises(ConfigError, match=r"classification_weight > 0 needs labels"):
            pretrainer(features, classification_weight=1.0, class_names=class_names)
    pretrainer(features, classification_weight=0.0, class_names=["unlabelled"])  # MPM alone needs none
    with pytest.raises(ConfigError, match="must not be negative"):
        pretrainer(features, id_weight=-1.0)
    with pytest.raises(ConfigError, match=r"decoder_dim=30 must be divisible by task\.decoder_heads=4"):
        pretrainer(features, decoder_dim=30)
    with pytest.raises(ConfigError, match="feature set"):
        MaskedParticlePretrainer(ParticleTransformer(13, 2, **SMALL), adamw(), features=None)
    with pytest.raises(ConfigError, match="not fitted yet"):
        pretrainer(feature_set("kin", extra=[["part_d0val", "auto"]]))


def test_a_batch_of_one_particle_jets_has_nothing_masked_and_a_finite_loss():
    task = pretrainer()
    batch, _ = jets(feature_set(), counts=[1, 1, 1], length=1)
    losses = task.losses(batch, torch.Generator().manual_seed(0))
    assert losses["continuous"].item() == 0.0 and losses["identity"].item() == 0.0
    losses["loss"].backward()  # a graph without NaN: the step is a no-op, not a crash
