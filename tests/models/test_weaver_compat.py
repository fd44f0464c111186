"""jettag's ParT against weaver-core's ParticleTransformer (the reference implementation).

weaver-core is a test-only dependency: the equivalence tests build its model, randomize every
weight and batch-norm statistic, save the state dict as weaver does (the `mod.` prefix of its
wrapper; also in the older `nn.MultiheadAttention` naming), load it with
`load_weaver_weights` and compare eval-mode logits on the same padded jets.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from helpers import toy_jets
from published import PART_KWARGS, randomize

from jettag.errors import ConfigError
from jettag.models import ParticleTransformer
from jettag.models.weaver import load_weaver_weights, weaver_key_map
from jettag.pipeline import build_model

REFERENCE = dict(jettag=dict(), weaver=PART_KWARGS)
# ParT plain: weaver's ParticleTransformer without pair inputs (no interaction bias)
PLAIN = dict(jettag=dict(use_interaction=False), weaver={**PART_KWARGS, "pair_input_dim": 0})
# weaver's own defaults where the reference differs: no GELU after the pair embedding, MLP head
SMALL = dict(
    jettag=dict(
        embed_dims=(32, 64, 32),
        pair_embed_dims=(16, 16),
        num_heads=4,
        num_layers=2,
        num_cls_layers=1,
        pair_final_activation=False,
        fc_params=[(24, 0.1)],
    ),
    weaver=dict(
        embed_dims=[32, 64, 32],
        pair_embed_dims=[16, 16],
        num_heads=4,
        num_layers=2,
        num_cls_layers=1,
        cls_block_params={"dropout": 0, "attn_dropout": 0, "activation_dropout": 0},
        fc_params=[(24, 0.1)],
    ),
)
LENGTH = 128  # weaver's padded length


def jets(num_features: int, n_jets: int = 12, seed: int = 3):
    """Toy jets (pt-ordered massless particles, 10 classes) as padded channels-last (x, v, mask)."""
    b = toy_jets(n_jets, seed=seed, classes=("label_QCD", "label_Tbqq", "label_H4q"))
    counts = np.asarray([len(p) for p in b["part_px"]])
    mask = torch.from_numpy(np.arange(LENGTH)[None, :] < counts[:, None])

    def pad(name):
        out = np.zeros((n_jets, LENGTH), dtype=np.float32)
        for k, values in enumerate(b[name]):
            out[k, : len(values)] = np.asarray(values)
        return torch.from_numpy(out)

    px, py, pz, energy = (pad(f"part_{c}") for c in ("px", "py", "pz", "energy"))
    v = torch.stack([px, py, pz, energy], dim=-1)
    pt = torch.hypot(px, py).clamp(min=1e-8)
    jet_pt, jet_e = (torch.from_numpy(np.asarray(b[k]))[:, None] for k in ("jet_pt", "jet_energy"))
    kin = [
        (pt.log() - 1.7) * 0.7,
        (energy.clamp(min=1e-8).log() - 2.0) * 0.7,
        ((pt / jet_pt).log() + 4.7) * 0.7,
        ((energy.clamp(min=1e-8) / jet_e).log() + 4.7) * 0.7,
        (torch.hypot(pad("part_deta"), pad("part_dphi")) - 0.2) * 4.0,
        pad("part_deta"),
        pad("part_dphi"),
    ]
    pid = ["part_charge", "part_isChargedHadron", "part_isNeutralHadron", "part_isPhoton", "part_isElectron"]
    extra = [pad(name) for name in [*pid, "part_isMuon"]]
    extra += [pad("part_d0val").tanh(), pad("part_d0err"), pad("part_dzval").tanh(), pad("part_dzerr")]
    # the published column orders: part_deta, part_dphi last (7, 13 or 17 columns)
    x = torch.stack([*kin[:5], *extra[: num_features - 7], *kin[5:]], dim=-1).clamp(-5, 5)
    return x * mask[..., None], v * mask[..., None], mask


class Wrapper(torch.nn.Module):
    """weaver's training wrapper: the model is its `mod` attribute, hence the `mod.` prefix in saved files."""

    def __init__(self, **kwargs):
        super().__init__()
        from weaver.nn.model.ParticleTransformer import ParticleTransformer as WeaverParT

        self.mod = WeaverParT(**kwargs)


def randomized_weaver(config, input_dim, num_classes, x, v, mask, seed=0):
    """weaver's ParT with batch-norm statistics from the jets, then every tensor perturbed."""
    torch.manual_seed(seed)
    model = Wrapper(input_dim=input_dim, num_classes=num_classes, **config["weaver"])
    return randomize(
        model, lambda m: m.mod(x.transpose(1, 2), v.transpose(1, 2), mask[:, None].float()), seed, 0.2
    )


def old_naming(state: dict) -> dict:
    """Keys as weaver saved them while its attention was nn.MultiheadAttention."""
    return {k.replace("attn.in_proj.weight", "attn.in_proj_weight").replace("attn.in_proj.bias", "attn.in_proj_bias"): t
            for k, t in state.items()}  # fmt: skip


@pytest.mark.parametrize(
    ("config", "input_dim"),
    [(REFERENCE, 7), (REFERENCE, 13), (REFERENCE, 17), (PLAIN, 13), (SMALL, 7)],
    ids=["reference-kin", "reference-kinpid", "reference-full", "plain-kinpid", "small-kin"],
)
def test_logits_match_weaver(config, input_dim, tmp_path):
    pytest.importorskip("weaver.nn.model.ParticleTransformer", reason="weaver-core is not installed")
    x, v, mask = jets(input_dim)
    weaver = randomized_weaver(config, input_dim, 10, x, v, mask)
    with torch.no_grad():
        expected = weaver.mod(x.transpose(1, 2), v.transpose(1, 2), mask[:, None].float())

    state = weaver.state_dict()
    assert all(k.startswith("mod.") for k in state)
    torch.save(old_naming(state), tmp_path / "old.pt")
    for source in (state, tmp_path / "old.pt"):
        model = ParticleTransformer(input_dim, 10, **config["jettag"])
        assert load_weaver_weights(model, source) == []
        model.eval()
        with torch.no_grad():
            got = model(x, v, mask)
            longest = int(mask.sum(1).max())
            trimmed = model(x[:, :longest], v[:, :longest], mask[:, :longest])
        print(f"{input_dim} inputs: max |diff| = {(got - expected).abs().max():.2e}")
        assert (got - expected).abs().max() < 1e-5
        assert (trimmed - expected).abs().max() < 1e-5


def test_dense_pair_embedding_matches_weaver_for_inference():
    """The static-shape (export) path against weaver built for inference (its ONNX path), softmax outputs."""
    pytest.importorskip("weaver.nn.model.ParticleTransformer", reason="weaver-core is not installed")
    x, v, mask = jets(7, n_jets=6)
    weaver = randomized_weaver(SMALL, 7, 10, x, v, mask)
    from weaver.nn.model.ParticleTransformer import ParticleTransformer as WeaverParT

    onnx_like = WeaverParT(input_dim=7, num_classes=10, for_inference=True, **SMALL["weaver"]).eval()
    onnx_like.load_state_dict({k.removeprefix("mod."): t for k, t in weaver.state_dict().items()})
    model = ParticleTransformer(7, 10, **SMALL["jettag"])
    load_weaver_weights(model, weaver.state_dict())
    model.eval()
    model.path = "dense"
    with torch.no_grad():
        expected = onnx_like(x.transpose(1, 2), v.transpose(1, 2), mask[:, None].float())
        got = model(x, v, mask).softmax(-1)
    assert (got - expected).abs().max() < 1e-5


def weaver_state_for(model: ParticleTransformer) -> dict:
    """A weaver-named state dict made from a jettag model's tensors (no weaver needed)."""
    inverse = {}
    for weaver_key, jettag_key in weaver_key_map(model).items():
        if "in_proj_" in weaver_key:
            continue
        tensor = model.state_dict()[jettag_key]
        if weaver_key.startswith("pair_embed.embed.") and weaver_key.endswith("weight") and tensor.dim() == 2:
            tensor = tensor[..., None]  # Linear -> 1x1 Conv1d
        inverse[f"mod.{weaver_key}"] = tensor.clone()
    return inverse


SMALL_J = dict(embed_dims=(16, 16), pair_embed_dims=(8,), num_heads=2, num_layers=1, num_cls_layers=1)


def test_round_trip_without_weaver():
    torch.manual_seed(0)
    source = ParticleTransformer(7, 3, **SMALL_J)
    target = ParticleTransformer(7, 3, **SMALL_J)
    load_weaver_weights(target, weaver_state_for(source))
    for key, tensor in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], tensor, rtol=0, atol=0)


def test_unmatched_key_is_one_clear_error(tmp_path):
    state = weaver_state_for(ParticleTransformer(7, 3, **SMALL_J))
    state["mod.blocks.0.c_mask"] = torch.ones(1)
    path = tmp_path / "ParT_odd.pt"
    torch.save(state, path)
    with pytest.raises(ConfigError, match=r"ParT_odd\.pt.*'blocks\.0\.c_mask'"):
        load_weaver_weights(ParticleTransformer(7, 3, **SMALL_J), path)


def test_missing_and_misshapen_keys_are_named():
    state = weaver_state_for(ParticleTransformer(7, 3, **SMALL_J))
    del state["mod.norm.weight"]
    with pytest.raises(ConfigError, match=r"lacks 'norm\.weight'"):
        load_weaver_weights(ParticleTransformer(7, 3, **SMALL_J), state)
    with pytest.raises(ConfigError, match=r"'embed\.input_bn\.weight' has shape \(7,\)"):
        load_weaver_weights(
            ParticleTransformer(13, 3, **SMALL_J), weaver_state_for(ParticleTransformer(7, 3, **SMALL_J))
        )
    with pytest.raises(ConfigError, match="does not exist"):
        load_weaver_weights(ParticleTransformer(7, 3, **SMALL_J), "no/such/ParT_full.pt")


def test_head_of_another_size(caplog):
    state = weaver_state_for(ParticleTransformer(7, 10, **SMALL_J))
    with pytest.raises(ConfigError, match="classifies 10 classes but the model 2"):
        load_weaver_weights(ParticleTransformer(7, 2, **SMALL_J), state)
    model = ParticleTransformer(7, 2, **SMALL_J)
    head = model.head.weight.clone()
    with caplog.at_level(logging.INFO):
        load_weaver_weights(model, state, keep_head="auto")
    assert "head is replaced" in caplog.text
    torch.testing.assert_close(model.head.weight, head)
    torch.testing.assert_close(model.norm.weight, state["mod.norm.weight"])


def test_hidden_fc_layers_load_with_the_backbone():
    """fc_params layers are backbone: keep_head=False (fine-tuning) loads them and keeps only the model's last Linear."""
    torch.manual_seed(0)
    source = ParticleTransformer(7, 10, **SMALL_J, fc_params=[(12, 0.1)])
    state = weaver_state_for(source)
    assert {"mod.fc.0.0.weight", "mod.fc.1.weight"} <= set(
        state
    )  # weaver's names, as in test_logits_match_weaver
    model = ParticleTransformer(7, 2, **SMALL_J, fc_params=[(12, 0.1)])
    head = model.head.weight.clone()
    load_weaver_weights(model, state, keep_head=False)
    torch.testing.assert_close(model.fc[0].weight, source.fc[0].weight, rtol=0, atol=0)
    torch.testing.assert_close(model.head.weight, head, rtol=0, atol=0)


def test_build_model_honours_weights(tmp_path):
    source = ParticleTransformer(7, 2, **SMALL_J)
    torch.save(weaver_state_for(source), tmp_path / "w.pt")
    cfg = {"_target_": "jettag.models.ParticleTransformer", **SMALL_J, "weights": str(tmp_path / "w.pt")}
    model = build_model(cfg, 7, 2)
    torch.testing.assert_close(model.head.weight, source.head.weight)
    assert build_model({**cfg, "weights": None}, 7, 2).head.weight.shape == (2, 16)
    with pytest.raises(
        ConfigError, match="load into the ParticleTransformer and ParticleNet, not ParticleFlowNetwork"
    ):
        build_model(
            {"_target_": "jettag.models.ParticleFlowNetwork", "weights": str(tmp_path / "w.pt")}, 7, 2
        )


def test_training_step_matches_weaver():
    """Train mode (dropout 0), float64: same logits and gradients, with padded jets of many lengths.

    weaver's input batch norm takes batch statistics over padded particles too (jettag's over real
    ones only), so both keep it in eval mode here; every other batch norm (pair embedding) trains.
    In float64 any difference of method, not of rounding, would show.
    """
    pytest.importorskip("weaver.nn.model.ParticleTransformer", reason="weaver-core is not installed")
    no_dropout = {"dropout": 0, "attn_dropout": 0, "activation_dropout": 0}
    config = {
        "jettag": {**SMALL["jettag"], **no_dropout},
        "weaver": {**SMALL["weaver"], "block_params": no_dropout, "trim": False},
    }
    config["jettag"]["fc_params"] = [(24, 0.0)]
    config["weaver"]["fc_params"] = [(24, 0.0)]
    x, v, mask = jets(7, n_jets=40, seed=5)  # several buckets, packed tokens
    weaver = randomized_weaver(config, 7, 10, x, v, mask).mod.double()
    model = ParticleTransformer(7, 10, **config["jettag"])
    load_weaver_weights(model, weaver.state_dict())
    model.double()
    x, v = x.double(), v.double()
    y = torch.arange(40) % 10
    for m in (weaver, model):
        m.train()
    weaver.embed.input_bn.eval()
    model.embed.input_bn.eval()
    expected = weaver(x.transpose(1, 2), v.transpose(1, 2), mask[:, None].double())
    got = model(x, v, mask)
    assert (got - expected).abs().max() < 1e-10
    torch.nn.functional.cross_entropy(expected, y).backward()
    torch.nn.functional.cross_entropy(got, y).backward()
    params = dict(model.named_parameters())
    for weaver_key, jettag_key in weaver_key_map(model).items():
        theirs = dict(weaver.named_parameters()).get(weaver_key)
        if theirs is None or jettag_key not in params:
            continue  # buffers, and the old attention naming
        ours = params[jettag_key].grad
        torch.testing.assert_close(
            ours, theirs.grad.reshape(ours.shape), atol=1e-10, rtol=1e-7, msg=jettag_key
        )
    # running statistics of the pair embedding moved the same way
    for weaver_key, jettag_key in weaver_key_map(model).items():
        if weaver_key.startswith("pair_embed") and "running" in weaver_key:
            torch.testing.assert_close(model.state_dict()[jettag_key], weaver.state_dict()[weaver_key])


def test_train_from_weaver_weights_on_the_command_line(toy_root_files, tmp_path):
    """`jettag-train model.weights=<weaver file>` starts from the file (head replaced for 2 classes);
    the run's checkpoint then stands alone: jettag-eval works after the file is gone."""
    from helpers import run_cli

    part_small = dict(embed_dims=(64, 256, 64), pair_embed_dims=(32, 32), num_heads=4, num_layers=4,
                      num_cls_layers=1)  # fmt: skip
    torch.manual_seed(7)
    source = ParticleTransformer(13, 10, **part_small)  # kinpid inputs, JetClass's 10 classes
    state = weaver_state_for(source)
    weights = tmp_path / "ParT_kinpid_like.pt"
    torch.save(state, weights)
    run_dir = tmp_path / "run"
    files = [f"data.{split}_files=[{path}]" for split, path in toy_root_files.items()]
    result = run_cli("jettag-train", "experiment=sample_part_small", *files, f"model.weights={weights}",
                     "trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.accelerator=cpu",
                     "data.batch_size=32", "task.optimizer.lr=0", f"hydra.run.dir={run_dir}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "head is replaced" in result.stderr + result.stdout
    trained = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    params = trained["state_dict"]
    # lr = 0: every weight is still the file's (batch-norm running statistics do move in training)
    for key in (
        "blocks.0.attn.in_proj.weight",
        "blocks.3.fc2.weight",
        "pair_embed.mlp.1.weight",
        "cls_token",
    ):
        torch.testing.assert_close(params[f"model.{key}"], source.state_dict()[key], rtol=0, atol=0)
    assert params["model.head.weight"].shape == (2, 64)

    weights.unlink()
    result = run_cli("jettag-eval", f"run_dir={run_dir}", "trainer.accelerator=cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "eval" / "metrics.json").is_file()
