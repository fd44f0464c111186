"""The kin, kinpid and full inputs are the published ones, column by column.

The published checkpoints (ParT_{kin,kinpid,full}.pt, ParticleNet_{kin,kinpid,full}.pt of
jet-universe/particle_transformer) were trained on the `pf_features` of that repository's
data/JetClass/JetClass_{kin,kinpid,full}.yaml. Those lists are written out here by hand, and the
values are computed here from the branches with numpy as the data configs define them
(`new_variables`: part_pt = hypot(px, py), part_pt_log = log(part_pt), ..., part_deltaR =
hypot(part_deta, part_dphi) of the file's branches, part_d0 = tanh(part_d0val); standardization
clip((x - subtract_by) * multiply_by, clip_min, clip_max), default clip -5..5), then compared
with the tensors jettag feeds its models on the Pythia jets shipped with jettag.
"""

from __future__ import annotations

import numpy as np
import pytest
import uproot
from omegaconf import OmegaConf
from published import KINPID, LENGTH, PUBLISHED, published_inputs, read_pt_ordered

from jettag.data import JetDataModule
from jettag.features.sets import FeatureSet
from jettag.paths import config_dir, sample_path


def feature_set(name: str) -> FeatureSet:
    cfg = OmegaConf.to_container(OmegaConf.load(config_dir() / "features" / f"{name}.yaml"))
    return FeatureSet.from_config(cfg)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_columns_by_name(name):
    features = feature_set(name)
    assert features.max_particles == LENGTH
    got = [
        (f.name, f.center, f.scale, f.lo, f.hi) if f.center is not None else (f.name, None, None, None, None)
        for f in features.features
    ]
    assert got == PUBLISHED[name]


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_columns_by_value_on_generated_jets(name):
    path = str(sample_path("top_qcd_val.root"))
    # particles in decreasing pT, the JetClass convention (the sample's stored momenta are rounded, which
    # swaps a few near-equal neighbours; jettag orders them, as files are meant to be)
    arrays = read_pt_ordered(path)
    expected = published_inputs(arrays, name, LENGTH, wrap=False)  # channels first, zero padding

    data = JetDataModule(
        feature_set(name), test_files=[path], labels=["label_QCD", "label_Tbqq"], progress=False
    )
    data.setup("test")
    dataset = data.dataset("test")
    assert len(dataset) == len(arrays)
    batch = dataset[np.arange(len(arrays))]
    x, mask = batch.x.numpy(), batch.mask.numpy()
    width = x.shape[1]
    assert x.shape[2] == len(PUBLISHED[name]) and width <= LENGTH
    np.testing.assert_array_equal(mask, expected["mask"][:, 0, :width] == 1)
    for c, (column, *_) in enumerate(PUBLISHED[name]):
        np.testing.assert_allclose(
            x[:, :, c], expected["features"][:, c, :width], rtol=1e-5, atol=2e-6, err_msg=f"{name}: {column}"
        )
    np.testing.assert_allclose(
        batch.v.numpy(), expected["lorentz_vectors"][:, :, :width].transpose(0, 2, 1), rtol=1e-6
    )


# kinpid as jettag wrote it before it took the published order: part_deta, part_dphi at columns 5-6
KINPID_BEFORE = [*KINPID[:5], *KINPID[11:], *KINPID[5:11]]


def test_checkpoint_written_before_the_reorder_scores_as_before(tmp_path):
    """A checkpoint carries its feature list: a run trained on the old kinpid order is fed that order."""
    import torch

    from jettag.inference import load_trained, predict_files
    from jettag.models import ParticleFlowNetwork

    def entry(column, center, scale, lo, hi):
        return [column, None] if center is None else [column, center, scale, lo, hi]

    old_features = {"name": "kinpid", "max_particles": LENGTH,
                    "particle_features": [entry(*f) for f in KINPID_BEFORE]}  # fmt: skip
    model_cfg = {"_target_": "jettag.models.ParticleFlowNetwork", "phi_dims": [16, 16], "f_dims": [16]}
    torch.manual_seed(0)
    model = ParticleFlowNetwork(13, 2, phi_dims=[16, 16], f_dims=[16])
    checkpoint = tmp_path / "before.ckpt"
    torch.save(
        {
            "state_dict": {f"model.{k}": t for k, t in model.state_dict().items()},
            "jettag": {
                "config": {"features": old_features, "model": model_cfg},
                "class_names": ["QCD", "Top"],
                "background": 0,
            },
        },
        checkpoint,
    )
    trained = load_trained(checkpoint)
    assert trained.features.names == [f[0] for f in KINPID_BEFORE]

    path = str(sample_path("top_qcd_val.root"))
    predict_files(trained, [path], tmp_path / "scores.root", "tree", progress=False)
    got = uproot.open(tmp_path / "scores.root")["Events"].arrays(library="np")["score_Top"]

    # the same jets in today's (published) order, columns moved back to where the old model expects them
    data = JetDataModule(
        feature_set("kinpid"), test_files=[path], labels=["label_QCD", "label_Tbqq"], progress=False
    )
    data.setup("test")
    dataset = data.dataset("test")
    batch = dataset[np.arange(len(dataset))]
    names = [f[0] for f in KINPID]
    before = [names.index(f[0]) for f in KINPID_BEFORE]
    with torch.no_grad():
        expected = model.eval()(batch.x[..., before], batch.v, batch.mask).softmax(-1)[:, 1].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # and the permutation matters: fed today's order, the old model scores differently
        today = model(batch.x, batch.v, batch.mask).softmax(-1)[:, 1].numpy()
    assert np.abs(today - expected).max() > 1e-3
