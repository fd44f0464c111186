"""jettag's ParticleNet against weaver-core's ParticleNet, with published-format files.

weaver-core is a test-only dependency. Each test builds weaver's ParticleNet as the published
ParticleNet_{kin,kinpid,full}.pt were built (particle_transformer's networks/example_ParticleNet.py:
k = 16, EdgeConv (64, 64, 64), (128, 128, 128), (256, 256, 256), FC 256, no fusion, input batch norm,
mean over real particles), randomizes every weight and batch-norm statistic, saves it as weaver
saves a model (the `mod.` prefix of its wrapper) and loads the file into jettag. Inputs are the
published ones, computed here from the branches of Pythia jets (tests/published.py), padded to 128 as
weaver's data loader pads them (`pad_mode: wrap`); some jets are cut to k or fewer particles, where
the reference's neighbour rule (padded slots as neighbours) matters.

weaver-core 0.5.3 trims padding in eval mode to the longest jet of a batch, which fails for a batch of
jets with at most k particles (top k + 1 of fewer slots); the published models ran at 128 slots, so
the reference here is built with trim=False (the same scores whenever trimming works).
"""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import torch
from published import PARTICLENET_KWARGS, PUBLISHED, published_inputs, randomize, read_pt_ordered

from jettag.errors import ConfigError
from jettag.models import ParticleNet
from jettag.models.weaver import load_weaver_weights
from jettag.paths import sample_path

# particles kept in the first jets: alone, fewer than k, exactly k, k + 1
SHORT = [1, 2, 5, 16, 17]


class Wrapper(torch.nn.Module):
    """weaver's training wrapper (particle_transformer's ParticleNetWrapper): the model is `mod`."""

    def __init__(self, **kwargs):
        super().__init__()
        from weaver.nn.model.ParticleNet import ParticleNet as WeaverParticleNet

        self.mod = WeaverParticleNet(trim=False, **kwargs)

    def forward(self, points, features, lorentz_vectors, mask):
        return self.mod(points, features, mask)


def generated_jets(n_jets: int = 16) -> ak.Array:
    """Pythia jets of the shipped sample, the first ones cut to the lengths of SHORT."""
    arrays = read_pt_ordered(str(sample_path("top_qcd_val.root")), entry_stop=n_jets)
    keep = np.asarray(SHORT + [10_000] * (n_jets - len(SHORT)))
    index = ak.local_index(arrays.part_px)
    return ak.zip(
        {f: arrays[f][index < keep] if f.startswith("part_") else arrays[f] for f in arrays.fields},
        depth_limit=1,
    )


def randomized_weaver(input_dim: int, inputs: dict[str, torch.Tensor], seed: int = 0, **kwargs) -> Wrapper:
    """weaver's ParticleNet with batch-norm statistics from the jets, then every tensor perturbed."""
    torch.manual_seed(seed)
    model = Wrapper(input_dims=input_dim, num_classes=10, **{**PARTICLENET_KWARGS, **kwargs})
    return randomize(model, lambda m: m(**inputs), seed)


def channels_last(inputs: dict[str, torch.Tensor], length: int | None = None):
    """jettag's (x, v, mask) from the same inputs, zero-padded and cut to `length` slots."""
    mask = inputs["mask"][:, 0].bool()
    length = length or int(mask.sum(1).max())
    x = (inputs["features"] * inputs["mask"]).transpose(1, 2)[:, :length]
    v = (inputs["lorentz_vectors"] * inputs["mask"]).transpose(1, 2)[:, :length]
    return x.contiguous(), v.contiguous(), mask[:, :length]


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_scores_equal_weaver_on_published_inputs(name, tmp_path):
    pytest.importorskip("weaver.nn.model.ParticleNet", reason="weaver-core is not installed")
    inputs = {k: torch.from_numpy(v) for k, v in published_inputs(generated_jets(), name).items()}
    input_dim = len(PUBLISHED[name])
    weaver = randomized_weaver(input_dim, inputs)
    with torch.no_grad():
        expected = weaver(**inputs)
    state = weaver.state_dict()
    assert len(state) == 81 and all(k.startswith("mod.") for k in state)  # as the published files
    path = tmp_path / f"ParticleNet_{name}.pt"
    torch.save(state, path)

    model = ParticleNet(input_dim, 10, feature_names=[f[0] for f in PUBLISHED[name]])
    assert load_weaver_weights(model, path) == []
    model.eval()
    x, v, mask = channels_last(inputs)
    with torch.no_grad():
        got = model(x, v, mask)
        at_128 = model(*channels_last(inputs, 128))
        alone = torch.cat([model(x[i : i + 1, :n], v[i : i + 1, :n], mask[i : i + 1, :n])
                           for i, n in enumerate(mask.sum(1).tolist())])  # fmt: skip
    print(f"{name}: max |diff| = {(got - expected).abs().max():.2e}")
    assert (got - expected).abs().max() < 1e-5
    assert (at_128 - expected).abs().max() < 1e-5
    assert (alone - expected).abs().max() < 1e-5
    # the short jets are where the neighbour rules differ: jettag's own rule scores them differently
    real_rule = ParticleNet(input_dim, 10, neighbours="real", feature_names=[f[0] for f in PUBLISHED[name]])
    load_weaver_weights(real_rule, path)
    with torch.no_grad():
        differs = (real_rule.eval()(x, v, mask) - expected).abs().amax(1)
    assert (differs[: len(SHORT) - 1] > 1e-3).all() and (differs[len(SHORT) :] < 1e-5).all()


def test_fusion_and_more_fc_layers(tmp_path):
    """Other weaver configurations map too: fusion block, two hidden FC layers, equal widths (no shortcut conv)."""
    pytest.importorskip("weaver.nn.model.ParticleNet", reason="weaver-core is not installed")
    inputs = {k: torch.from_numpy(v) for k, v in published_inputs(generated_jets(12), "kin").items()}
    config = dict(
        conv_params=[(4, (16, 16)), (5, (24, 16))], fc_params=[(32, 0.1), (24, 0.1)], use_fusion=True
    )
    weaver = randomized_weaver(7, inputs, seed=3, **config)
    with torch.no_grad():
        expected = weaver(**inputs)
    assert weaver.mod.edge_convs[1].sc is None  # 16 -> 16: the identity shortcut
    model = ParticleNet(7, 10, conv_params=config["conv_params"], fc_params=config["fc_params"], use_fusion=True,
                        feature_names=[f[0] for f in PUBLISHED["kin"]])  # fmt: skip
    assert load_weaver_weights(model, weaver.state_dict()) == []
    with torch.no_grad():
        got = model.eval()(*channels_last(inputs))
    assert (got - expected).abs().max() < 1e-5


def test_files_that_do_not_fit_are_one_sentence(tmp_path):
    pytest.importorskip("weaver.nn.model.ParticleNet", reason="weaver-core is not installed")
    from weaver.nn.model.ParticleTransformer import ParticleTransformer as WeaverParT

    kin = Wrapper(input_dims=7, num_classes=10, **PARTICLENET_KWARGS)
    torch.save(kin.state_dict(), tmp_path / "ParticleNet_kin.pt")
    kinpid_model = ParticleNet(13, 10)
    with pytest.raises(
        ConfigError,
        match=r"'\S*ParticleNet_kin\.pt' does not fit this ParticleNet: 'bn_fts\.weight' has shape \(7,\)",
    ):
        load_weaver_weights(kinpid_model, tmp_path / "ParticleNet_kin.pt")
    smaller = ParticleNet(7, 10, conv_params=[(16, (64, 64, 64)), (16, (128, 128, 128))])
    with pytest.raises(ConfigError, match=r"its tensor 'edge_convs\.2\.convs\.0\.weight' has no counterpart"):
        load_weaver_weights(smaller, tmp_path / "ParticleNet_kin.pt")
    part = torch.nn.Module()
    part.mod = WeaverParT(input_dim=7, num_classes=10, embed_dims=[16], pair_embed_dims=[8], num_heads=2,
                          num_layers=1, num_cls_layers=1)  # fmt: skip
    torch.save(part.state_dict(), tmp_path / "ParT_kin.pt")
    with pytest.raises(
        ConfigError,
        match=r"ParT_kin\.pt' holds a weaver-core ParticleTransformer, not a ParticleNet; use model=part",
    ):
        load_weaver_weights(ParticleNet(7, 10), tmp_path / "ParT_kin.pt")


def test_head_replaced_for_other_classes(caplog):
    pytest.importorskip("weaver.nn.model.ParticleNet", reason="weaver-core is not installed")
    weaver = Wrapper(input_dims=7, num_classes=10, **PARTICLENET_KWARGS)
    state = weaver.state_dict()
    model = ParticleNet(7, 2)
    with pytest.raises(ConfigError, match="classifies 10 classes but the model 2"):
        load_weaver_weights(model, state)
    head = model.head.weight.clone()
    load_weaver_weights(model, state, keep_head="auto")
    torch.testing.assert_close(model.head.weight, head)  # the model's own 2-class head
    # the hidden FC layer is backbone: it comes from the file
    torch.testing.assert_close(model.fc[0].weight, state["mod.fc.0.0.weight"])
    torch.testing.assert_close(
        model.blocks[2].linears[2].weight, state["mod.edge_convs.2.convs.2.weight"][..., 0, 0]
    )


def test_model_weights_in_a_run_config(tmp_path):
    """`model=particlenet model.weights=ParticleNet_kin.pt`: the file's tensors, a new head for 2 classes."""
    pytest.importorskip("weaver.nn.model.ParticleNet", reason="weaver-core is not installed")
    from jettag.pipeline import build_model

    tiny = dict(conv_params=[(4, (8, 8)), (4, (16,))], fc_params=[(16, 0.1)], use_fusion=False)
    weaver = Wrapper(input_dims=7, num_classes=10, **tiny)
    torch.save(weaver.state_dict(), tmp_path / "ParticleNet_kin.pt")
    cfg = {"_target_": "jettag.models.ParticleNet", **tiny, "weights": str(tmp_path / "ParticleNet_kin.pt")}
    model = build_model(cfg, 7, 2, feature_names=[f[0] for f in PUBLISHED["kin"]])
    torch.testing.assert_close(
        model.blocks[1].linears[0].weight, weaver.mod.edge_convs[1].convs[0].weight[..., 0, 0]
    )
    torch.testing.assert_close(model.input_norm.running_var, weaver.mod.bn_fts.running_var)
    assert model.head.weight.shape == (2, 16) and model.point_columns == [5, 6]


def test_checkpoint_of_the_earlier_neighbour_rule_scores_as_before(tmp_path):
    """A jettag ParticleNet checkpoint written before `neighbours` existed keeps its rule (real neighbours,
    (eta, phi) from the four-vectors)."""
    from jettag.inference import load_trained

    torch.manual_seed(0)
    tiny = dict(conv_params=[[4, [8, 8]], [4, [16]]], fc_params=[[16, 0.1]])
    before = ParticleNet(7, 2, neighbours="real", points=None, **tiny).eval()
    features = {
        "name": "kin",
        "max_particles": 128,
        "particle_features": [[f[0], None] for f in PUBLISHED["kin"]],
    }
    config = {
        "model": {"_target_": "jettag.models.ParticleNet", **tiny, "use_fusion": False},
        "features": features,
    }
    torch.save({"state_dict": {f"model.{k}": t for k, t in before.state_dict().items()},
                "jettag": {"config": config, "class_names": ["QCD", "Top"], "background": 0}},
               tmp_path / "before.ckpt")  # fmt: skip
    trained = load_trained(tmp_path / "before.ckpt")
    assert trained.model.neighbours == "real" and trained.model.point_columns is None
    inputs = {k: torch.from_numpy(v) for k, v in published_inputs(generated_jets(12), "kin").items()}
    x, v, mask = channels_last(inputs)
    with torch.no_grad():
        torch.testing.assert_close(trained.model(x, v, mask), before(x, v, mask), rtol=0, atol=0)
