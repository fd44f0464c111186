"""Selections and new variables (safe expressions), auto standardization, reweighting."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot
from helpers import toy_jets, write_root

from jettag.data import JetDataModule
from jettag.data.dataset import JetBatchSampler
from jettag.data.expressions import Expression
from jettag.errors import ConfigError
from jettag.features.sets import FeatureSet

FEATURES = FeatureSet.from_config(
    {"name": "t", "particle_features": [["part_pt_log", "auto"], ["part_deltaR", 0.2, 4.0], "part_deta"]}
)


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    return write_root(tmp_path_factory.mktemp("fit") / "train.root", toy_jets(400, seed=31))


@pytest.fixture(scope="module")
def branches(train_file):
    return uproot.open(train_file)["tree"].arrays(library="ak")


def test_expressions_compute_like_numpy(branches):
    pt, eta = ak.to_numpy(branches["jet_pt"]), ak.to_numpy(branches["jet_eta"])
    passed = Expression.parse("jet_pt > 600 and abs(jet_eta) < 1.5 or not jet_pt < 640", "k")(branches)
    assert np.array_equal(ak.to_numpy(passed), ((pt > 600) & (np.abs(eta) < 1.5)) | (pt >= 640))
    chained = Expression.parse("560 < jet_pt <= 610", "k")(branches)
    assert np.array_equal(ak.to_numpy(chained), (560 < pt) & (pt <= 610))
    lead = Expression.parse("max(hypot(part_px, part_py)) / jet_pt", "k")(branches)
    by_hand = [
        np.max(np.hypot(x, y))
        for x, y in zip(ak.to_list(branches["part_px"]), ak.to_list(branches["part_py"]), strict=True)
    ]
    assert np.allclose(ak.to_numpy(lead), np.asarray(by_hand) / pt, rtol=1e-5)
    n = Expression.parse("num(part_px) + 0 * pi", "k")(branches)
    assert np.array_equal(ak.to_numpy(n), ak.to_numpy(branches["jet_nparticles"]).astype(int))


@pytest.mark.parametrize(
    "text, words",
    [
        ("__import__('os').system('ls')", "not one of the allowed functions"),
        ("open('/etc/passwd')", "calls 'open'"),
        ("jet_pt.__class__", "Attribute"),
        ("[x for x in jet_pt]", "ListComp"),
        ("part_px[0] > 1", "Subscript"),
        ("(lambda: 1)()", "calls 'lambda: 1'"),
        ("jet_pt if (lambda: 1) else 0", "Lambda"),
        ("np.abs(jet_eta) < 2", "calls 'np.abs'"),
        ("jet_pt > 'a'", "only numbers"),
        ("abs(jet_eta, 2) < 2", "takes 1 positional"),
        ("jet_pt >", "not a valid expression"),
        ("jet_pt := 3", "not a valid expression"),
    ],
)
def test_unsafe_or_broken_expressions_rejected(text, words):
    with pytest.raises(ConfigError) as err:
        Expression.parse(text, "data.selection")
    assert str(err.value).startswith("data.selection: ") and words in str(err.value)


def test_selection_and_new_variables_in_the_loader(train_file, branches):
    pt = ak.to_numpy(branches["jet_pt"])
    lead = ak.to_numpy(ak.max(np.hypot(branches["part_px"], branches["part_py"]), axis=1)) / pt
    dm = JetDataModule(
        FEATURES, train_files=[train_file], progress=False, chunk_size=64, standardization="fixed",
        selection="jet_pt > 590 and lead_frac < 0.5",
        new_variables={"lead_frac": "max(hypot(part_px, part_py)) / jet_pt", "lead_x2": "2 * lead_frac"},
        observers=["lead_frac", "lead_x2", "jet_pt"],
    )  # fmt: skip
    dm.features = dm.builder.features = FeatureSet.from_config(
        {"particle_features": [["part_pt_log", 1.7, 0.7], "part_deta"]}
    )
    jets = dm.dataset("train").jets
    keep = (pt > 590) & (lead < 0.5)
    assert np.allclose(jets.observers["jet_pt"], pt[keep])
    assert np.allclose(jets.observers["lead_frac"], lead[keep], rtol=1e-5)
    assert np.allclose(jets.observers["lead_x2"], 2 * lead[keep], rtol=1e-5)
    assert dm.skipped["train"]["failed_selection"] == int((~keep).sum())
    with pytest.raises(ConfigError, match=r"data\.selection.*one per jet"):
        JetDataModule(FEATURES, train_files=[train_file], progress=False, standardization="fixed",
                      selection="hypot(part_px, part_py) > 1").dataset("train")  # fmt: skip


def test_auto_standardization_fit_matches_numpy(train_file, branches, tmp_path):
    dm = JetDataModule(FEATURES, train_files=[train_file], progress=False, fit_fraction=0.5, chunk_size=64)
    dm.fit()
    # independently: the first half of the file's particles, log pT, median and 68% half-width
    first = branches[:200]
    log_pt = np.log(
        np.hypot(ak.to_numpy(ak.flatten(first["part_px"])), ak.to_numpy(ak.flatten(first["part_py"])))
    )
    lower, median, upper = np.percentile(log_pt, [16, 50, 84])
    fitted = dm.features.features[0]
    assert not fitted.auto
    assert fitted.center == pytest.approx(median, rel=1e-5)
    assert fitted.scale == pytest.approx(1 / max(upper - median, median - lower), rel=1e-4)
    assert dm.features.features[1].center == 0.2  # fixed features stay as configured
    record = __import__("json").loads(dm.save_fit(tmp_path)[0].read_text())
    assert record["features"]["part_pt_log"]["center"] == pytest.approx(median, rel=1e-5)
    assert record["fitted_on"]["jets"] == 200
    # the fitted feature set is what the run config stores; it rebuilds identically
    assert FeatureSet.from_config(dm.features.to_config()) == dm.features
    jets = dm.dataset("train").jets
    assert np.allclose(
        jets.features[: len(log_pt), 0],
        np.clip((log_pt - fitted.center) * fitted.scale, -5, 5)[: len(log_pt)],
        atol=1e-5,
    )
    with pytest.raises(ConfigError, match="auto"):
        JetDataModule(FEATURES, test_files=[train_file], progress=False).dataset("test")


def test_flat_reweighting_weights_and_sampling(train_file, branches, tmp_path):
    edges = [550, 575, 600, 625, 650]
    dm = JetDataModule(
        FEATURES, train_files=[train_file], progress=False, fit_fraction=1.0, standardization="auto",
        reweight={"mode": "flat", "variables": ["jet_pt"], "bins": {"jet_pt": edges}},
    )  # fmt: skip
    dm.fit()
    pt = ak.to_numpy(branches["jet_pt"])
    label = ak.to_numpy(branches["label_Tbqq"]).astype(int)
    # by hand: weight 1 / (jets of the class in the bin), normalised per class by the filled bins
    counts = np.stack([np.histogram(pt[label == k], edges)[0] for k in (0, 1)])
    expected = np.where(counts > 0, 1 / np.maximum(counts, 1), 0) / (counts > 0).sum(1, keepdims=True)
    assert np.allclose(dm.reweighting.table, expected / expected.max())
    # the weighted spectrum of each class is flat, and both classes carry the same total
    weighted = counts * dm.reweighting.table
    assert np.allclose(weighted, weighted[0, 0])
    # sampling: jets kept in proportion to their weight (many epochs of the batch sampler)
    dataset = dm.dataset("train")
    weights = dm.reweighting.weights(dataset.jets)
    sampler = JetBatchSampler(dataset.counts, 50, shuffle=True, weights=weights, seed=1)
    drawn = np.concatenate([np.concatenate(list(sampler)) for _ in range(100)])
    kept = np.bincount(drawn, minlength=len(dataset)) / 100
    assert np.corrcoef(kept, weights)[0, 1] > 0.95
    written = dm.save_fit(tmp_path)
    assert (tmp_path / "reweighting.png").stat().st_size > 10_000 and len(written) == 3


def test_reweight_config_errors():
    with pytest.raises(ConfigError, match=r"data\.reweight\.bins\.jet_pt"):
        JetDataModule(
            FEATURES, reweight={"mode": "flat", "variables": ["jet_pt"], "bins": {"jet_pt": [3, 1]}}
        )
    with pytest.raises(ConfigError, match=r"data\.reweight\.mode"):
        JetDataModule(FEATURES, reweight={"mode": "smooth"})
    with pytest.raises(ConfigError, match=r"data\.reweight\.bins=10; give the bin edges per variable"):
        JetDataModule(FEATURES, reweight={"mode": "flat", "variables": ["jet_pt"], "bins": 10})


def test_flat_reweighting_in_pt_and_mass(train_file, branches):
    edges = {"jet_pt": [550, 600, 650], "jet_sdmass": [0, 100, 200, 400]}
    dm = JetDataModule(
        FEATURES, train_files=[train_file], progress=False, fit_fraction=1.0, standardization="auto",
        reweight={"mode": "flat", "variables": ["jet_pt", "jet_sdmass"], "bins": edges},
    )  # fmt: skip
    dm.fit()
    pt, mass = ak.to_numpy(branches["jet_pt"]), ak.to_numpy(branches["jet_sdmass"])
    label = ak.to_numpy(branches["label_Tbqq"]).astype(int)
    counts = np.stack(
        [np.histogram2d(pt[label == k], mass[label == k], list(edges.values()))[0] for k in (0, 1)]
    )
    weighted = counts * dm.reweighting.table
    filled = counts > 0
    # every filled (class, pT, mass) cell carries the same weight per filled cell of its class, classes equal
    per_class = weighted.reshape(2, -1).sum(1)
    assert np.allclose(per_class, per_class[0])
    for k in (0, 1):
        assert np.allclose(weighted[k][filled[k]], per_class[k] / filled[k].sum())


def test_class_balancing(train_file, branches):
    dm = JetDataModule(FEATURES, train_files=[train_file], progress=False, fit_fraction=1.0, standardization="auto",
                       selection="jet_pt < 600 or label_Tbqq == 0", reweight={"mode": "balance"})  # fmt: skip
    dm.fit()
    label = ak.to_numpy(branches["label_Tbqq"]).astype(int)
    pt = ak.to_numpy(branches["jet_pt"])
    kept = (pt < 600) | (label == 0)  # fewer top jets than QCD jets pass: the classes are unbalanced
    n = np.bincount(label[kept], minlength=2)
    assert n[1] < 0.8 * n[0]
    # weight of a class proportional to 1 / its jets: equal expected jets per class
    assert np.allclose(dm.reweighting.table.ravel() * n, (dm.reweighting.table.ravel() * n)[0])
    assert dm.reweighting.table.max() == 1.0
