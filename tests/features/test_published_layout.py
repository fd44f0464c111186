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

import awkward as ak
import numpy as np
import pytest
import uproot
from omegaconf import OmegaConf

from jettag.data import JetDataModule
from jettag.features.sets import FeatureSet
from jettag.paths import config_dir, sample_path

# (name, subtract_by, multiply_by, clip_min, clip_max); None = no transformation
KIN = [
    ("part_pt_log", 1.7, 0.7, -5, 5),
    ("part_e_log", 2.0, 0.7, -5, 5),
    ("part_logptrel", -4.7, 0.7, -5, 5),
    ("part_logerel", -4.7, 0.7, -5, 5),
    ("part_deltaR", 0.2, 4.0, -5, 5),
    ("part_deta", None, None, None, None),
    ("part_dphi", None, None, None, None),
]
KINPID = [
    ("part_pt_log", 1.7, 0.7, -5, 5),
    ("part_e_log", 2.0, 0.7, -5, 5),
    ("part_logptrel", -4.7, 0.7, -5, 5),
    ("part_logerel", -4.7, 0.7, -5, 5),
    ("part_deltaR", 0.2, 4.0, -5, 5),
    ("part_charge", None, None, None, None),
    ("part_isChargedHadron", None, None, None, None),
    ("part_isNeutralHadron", None, None, None, None),
    ("part_isPhoton", None, None, None, None),
    ("part_isElectron", None, None, None, None),
    ("part_isMuon", None, None, None, None),
    ("part_deta", None, None, None, None),
    ("part_dphi", None, None, None, None),
]
FULL = [
    ("part_pt_log", 1.7, 0.7, -5, 5),
    ("part_e_log", 2.0, 0.7, -5, 5),
    ("part_logptrel", -4.7, 0.7, -5, 5),
    ("part_logerel", -4.7, 0.7, -5, 5),
    ("part_deltaR", 0.2, 4.0, -5, 5),
    ("part_charge", None, None, None, None),
    ("part_isChargedHadron", None, None, None, None),
    ("part_isNeutralHadron", None, None, None, None),
    ("part_isPhoton", None, None, None, None),
    ("part_isElectron", None, None, None, None),
    ("part_isMuon", None, None, None, None),
    ("part_d0", None, None, None, None),
    ("part_d0err", 0, 1, 0, 1),
    ("part_dz", None, None, None, None),
    ("part_dzerr", 0, 1, 0, 1),
    ("part_deta", None, None, None, None),
    ("part_dphi", None, None, None, None),
]
PUBLISHED = {"kin": KIN, "kinpid": KINPID, "full": FULL}
LENGTH = 128


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


def published_values(arrays: ak.Array, column: str) -> ak.Array:
    """One input variable as the data configs define it, from the file's branches."""
    pt = np.hypot(arrays.part_px, arrays.part_py)
    formulas = {
        "part_pt_log": lambda: np.log(pt),
        "part_e_log": lambda: np.log(arrays.part_energy),
        "part_logptrel": lambda: np.log(pt / arrays.jet_pt),
        "part_logerel": lambda: np.log(arrays.part_energy / arrays.jet_energy),
        "part_deltaR": lambda: np.hypot(arrays.part_deta, arrays.part_dphi),
        "part_d0": lambda: np.tanh(arrays.part_d0val),
        "part_dz": lambda: np.tanh(arrays.part_dzval),
    }
    return formulas[column]() if column in formulas else arrays[column]


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_columns_by_value_on_generated_jets(name):
    path = str(sample_path("top_qcd_val.root"))
    arrays = uproot.open(path)["tree"].arrays()
    # particles in decreasing pT, the JetClass convention (the sample's stored momenta are rounded, which
    # swaps a few near-equal neighbours; jettag orders them, as files are meant to be)
    order = ak.argsort(np.hypot(arrays.part_px, arrays.part_py), ascending=False, stable=True)
    arrays = ak.zip(
        {f: arrays[f][order] if f.startswith("part_") else arrays[f] for f in arrays.fields}, depth_limit=1
    )
    n_jets = len(arrays)
    counts = np.minimum(ak.to_numpy(ak.num(arrays.part_px)), LENGTH)
    assert counts.min() > 0

    expected = np.zeros((n_jets, LENGTH, len(PUBLISHED[name])), dtype=np.float64)
    for c, (column, center, scale, lo, hi) in enumerate(PUBLISHED[name]):
        values = published_values(arrays, column)
        padded = ak.to_numpy(ak.fill_none(ak.pad_none(values, LENGTH, clip=True), 0.0)).astype(np.float64)
        if center is not None:
            padded = np.clip((padded - center) * scale, lo, hi)
        expected[:, :, c] = padded * (np.arange(LENGTH) < counts[:, None])

    data = JetDataModule(
        feature_set(name), test_files=[path], labels=["label_QCD", "label_Tbqq"], progress=False
    )
    data.setup("test")
    dataset = data.dataset("test")
    assert len(dataset) == n_jets
    batch = dataset[np.arange(n_jets)]
    x, mask = batch["x"].numpy(), batch["mask"].numpy()
    assert x.shape[2] == len(PUBLISHED[name])
    np.testing.assert_array_equal(mask.sum(1), counts)
    width = x.shape[1]
    for c, (column, *_) in enumerate(PUBLISHED[name]):
        np.testing.assert_allclose(
            x[:, :, c], expected[:, :width, c], rtol=1e-5, atol=2e-6, err_msg=f"{name}: column {c} {column}"
        )
    # the four-vectors too, as (px, py, pz, E)
    for c, branch in enumerate(("part_px", "part_py", "part_pz", "part_energy")):
        padded = ak.to_numpy(ak.fill_none(ak.pad_none(arrays[branch], width, clip=True), 0.0))
        np.testing.assert_allclose(batch["v"][..., c].numpy(), padded, rtol=1e-6, err_msg=branch)


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
        expected = model.eval()(batch["x"][..., before], batch["v"], batch["mask"]).softmax(-1)[:, 1].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # and the permutation matters: fed today's order, the old model scores differently
        today = model(batch["x"], batch["v"], batch["mask"]).softmax(-1)[:, 1].numpy()
    assert np.abs(today - expected).max() > 1e-3
