"""Features recomputed in torch (`jettag.features.recompute`) against the loader's, and against `vector`.

The loader's features of generated-looking jets (massive particles, jets across phi = +-pi and near
eta = 0, no jet_* / part_deta / part_dphi branches, so the loader derives the jet axis from the
particles as the recomputation does) are compared with `FeatureRecomputer` of the loader's own
batches; `kinematics()` is checked against values worked out here with `vector`.
"""

from __future__ import annotations

import math

import awkward as ak
import numpy as np
import pytest
import torch
import vector
import yaml
from helpers import write_root

from jettag.data import JetDataModule
from jettag.errors import ConfigError
from jettag.features.recompute import KINEMATIC, FeatureRecomputer, kinematics
from jettag.features.sets import FeatureSet
from jettag.paths import config_dir

LABELS = ["label_QCD", "label_Tbqq"]
# (mass in GeV, charge, PID flag) of the particle species of the generated jets
SPECIES = [
    (0.0, 0, "part_isPhoton"),
    (0.000511, 1, "part_isElectron"),
    (0.10566, 1, "part_isMuon"),
    (0.13957, 1, "part_isChargedHadron"),
    (0.49761, 0, "part_isNeutralHadron"),
]
FLAGS = ["part_isChargedHadron", "part_isNeutralHadron", "part_isPhoton", "part_isElectron", "part_isMuon"]
NEAR_PI, ACROSS_PI, ETA_UP, ETA_DOWN, SINGLE = 0, 1, 2, 3, 4  # jets with a purpose


def feature_set(name: str) -> FeatureSet:
    with open(config_dir() / "features" / f"{name}.yaml") as f:
        return FeatureSet.from_config(yaml.safe_load(f))


def wrap(phi):
    return (np.asarray(phi) + np.pi) % (2 * np.pi) - np.pi


def generated_jets(n_jets: int = 200, seed: int = 7) -> tuple[dict, np.ndarray]:
    """JetClass-schema particle and label branches (no jet_* branches), and the particles per jet."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 61, n_jets)
    counts[[NEAR_PI, ACROSS_PI, ETA_UP]] = [40, 35, 30]
    counts[ETA_DOWN], counts[SINGLE] = counts[ETA_UP], 1
    jet_pt = rng.uniform(200, 800, n_jets)
    jet_eta = rng.uniform(-2, 2, n_jets)
    jet_phi = rng.uniform(-np.pi, np.pi, n_jets)
    jet_phi[NEAR_PI], jet_phi[ACROSS_PI] = np.pi - 0.02, -np.pi + 0.01
    jet_eta[ETA_UP] = 0.01
    columns = {k: [] for k in ("px", "py", "pz", "energy", "species")}
    for i in range(n_jets):
        n = counts[i]
        if i == ETA_DOWN:  # the mirror image of ETA_UP in z: its summed eta is exactly the opposite
            for k in columns:
                columns[k].append(-columns[k][ETA_UP] if k == "pz" else columns[k][ETA_UP])
            continue
        pt = 0.1 + rng.dirichlet(np.full(n, 0.7)) * jet_pt[i]
        eta = jet_eta[i] + np.clip(rng.normal(0, 0.2, n), -0.8, 0.8)
        phi = wrap(jet_phi[i] + np.clip(rng.normal(0, 0.2, n), -0.8, 0.8))
        species = rng.choice(len(SPECIES), n, p=[0.35, 0.05, 0.05, 0.45, 0.1])
        mass = np.array([s[0] for s in SPECIES])[species]
        order = rng.permutation(n)  # not pT-ordered: the loader sorts
        columns["px"].append((pt * np.cos(phi))[order])
        columns["py"].append((pt * np.sin(phi))[order])
        columns["pz"].append((pt * np.sinh(eta))[order])
        columns["energy"].append(np.sqrt((pt * np.cosh(eta)) ** 2 + mass**2)[order])
        columns["species"].append(species[order])
    flat = {k: np.concatenate(v) for k, v in columns.items()}
    species = flat["species"]
    sign = rng.choice([-1.0, 1.0], len(species))
    charge = np.array([s[1] for s in SPECIES])[species] * sign
    charged = charge != 0

    def jagged(values):
        return ak.unflatten(np.asarray(values, dtype=np.float32), counts)

    branches = {f"part_{k}": jagged(flat[k]) for k in ("px", "py", "pz", "energy")}
    branches["part_charge"] = jagged(charge)
    for flag in FLAGS:
        branches[flag] = jagged(np.array([s[2] == flag for s in SPECIES])[species])
    for name in ("part_d0val", "part_dzval"):
        branches[name] = jagged(np.where(charged, rng.normal(0, 0.1, len(species)), 0.0))
    for name in ("part_d0err", "part_dzerr"):
        branches[name] = jagged(np.where(charged, rng.uniform(0.005, 0.05, len(species)), 0.0))
    top = rng.random(n_jets) < 0.5
    branches["label_QCD"], branches["label_Tbqq"] = ~top, top
    return branches, counts


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    branches, counts = generated_jets()
    path = write_root(tmp_path_factory.mktemp("recompute") / "jets.root", branches)
    return path, branches, counts


def particle_vectors(branches, counts) -> list[vector.MomentumNumpy4D]:
    """Each jet's particles as `vector` arrays, in float64 from the stored float32 values."""
    flat = {k: ak.to_numpy(ak.flatten(branches[f"part_{b}"])).astype(np.float64)
            for k, b in (("px", "px"), ("py", "py"), ("pz", "pz"), ("E", "energy"))}  # fmt: skip
    starts = np.cumsum(counts) - counts
    return [
        vector.array({k: a[s : s + n] for k, a in flat.items()}) for s, n in zip(starts, counts, strict=True)
    ]


def test_the_generated_jets_are_what_the_comparison_needs(generated):
    _, branches, counts = generated
    assert not any(name.startswith("jet_") or name in ("part_deta", "part_dphi") for name in branches)
    jets = particle_vectors(branches, counts)
    axis = [vector.obj(px=j.px.sum(), py=j.py.sum(), pz=j.pz.sum(), E=j.E.sum()) for j in jets]
    # the deta sign convention matters: two jets near eta = 0 of opposite signs, with particles on both sides
    assert 0 < axis[ETA_UP].eta < 0.1 and axis[ETA_DOWN].eta == -axis[ETA_UP].eta
    for jet in (ETA_UP, ETA_DOWN):
        assert (jets[jet].eta > axis[jet].eta).any() and (jets[jet].eta < axis[jet].eta).any()
    # two jets whose particles lie on both sides of phi = +-pi
    for jet in (NEAR_PI, ACROSS_PI):
        assert (jets[jet].phi > 3).any() and (jets[jet].phi < -3).any()
    masses = np.concatenate([j.mass for j in jets])
    assert (masses > 0.4).sum() > 100 and (masses > 0.1).sum() > 1000
    assert counts.min() == 1 and counts.max() <= 60 and len(counts) == 200


def loader_batches(path, features: FeatureSet, **kwargs):
    data = JetDataModule(
        features, test_files=[path], labels=LABELS, progress=False, eval_batch_size=64, **kwargs
    )
    data.fit()  # standardization fitted on data.train_files, where a feature asks for it
    data.setup("test")
    return data, list(data.test_dataloader())


def assert_recomputed_equal(data, batches, counts):
    recompute = FeatureRecomputer(data.features)
    names = data.features.names
    assert sum(len(b) for b in batches) == len(counts)
    # nothing truncated by max_particles: the loader's jet axis is that of the batch's particles
    assert sum(int(b.mask.sum()) for b in batches) == counts.sum()
    for batch in batches:
        out = recompute(batch.x, batch.v, batch.mask)
        assert out.shape == batch.x.shape and out.dtype == batch.x.dtype
        assert torch.isfinite(out).all()
        padded = ~batch.mask
        assert (out[padded] == 0).all() and (batch.x[padded] == 0).all()
        for c, name in enumerate(names):
            np.testing.assert_allclose(
                out[..., c].numpy(), batch.x[..., c].numpy(), rtol=0, atol=1e-5, err_msg=f"column {c}: {name}"
            )


@pytest.mark.parametrize("name", ["kin", "kinpid", "full"])
def test_recomputed_features_equal_the_loaders(generated, name):
    path, _, counts = generated
    features = feature_set(name)
    assert features.max_particles > counts.max()
    assert any(n in KINEMATIC for n in features.names)
    data, batches = loader_batches(path, features)
    assert_recomputed_equal(data, batches, counts)


def test_standardization_is_applied_as_the_loader_applies_it(generated):
    """Fixed numbers with a clip range that bites, and numbers fitted on the training data ('auto')."""
    path, _, counts = generated
    features = FeatureSet.from_config(
        {
            "name": "custom",
            "max_particles": 64,
            "particle_features": [
                ["part_pt_log", 0.5, 2.0, -1, 1],  # clipped for many particles, not for all
                ["part_logptrel", "auto"],
                ["part_eta", 0.3, 1.5],
                "part_phi",
                ["part_pt", 10.0, 0.1, -5, 5],
                ["part_deta", 0.0, 5.0, -1, 1],
                "part_charge",
                ["part_e_log", "auto", -3, 3],
                ["part_deltaR", 0.2, 4.0],
                ["part_dphi", "auto"],
            ],
        }
    )
    with pytest.raises(ConfigError, match="auto"):
        FeatureRecomputer(features)
    data, batches = loader_batches(path, features, train_files=[path], fit_fraction=1.0)
    assert not data.features.needs_fit
    fitted = {f.name: f for f in data.features.features}
    assert fitted["part_logptrel"].center is not None and fitted["part_logptrel"].scale != 1.0
    assert_recomputed_equal(data, batches, counts)
    x = torch.cat([b.x[b.mask] for b in batches])
    pt_log = x[:, 0]
    assert (pt_log.abs() == 1).sum() > 100 and (pt_log.abs() < 0.99).sum() > 100


def wrap_into_half_open(dphi):
    out = (dphi + np.pi) % (2 * np.pi) - np.pi
    return np.where(out >= np.pi, out - 2 * np.pi, out)


def vector_kinematics(v: np.ndarray) -> dict[str, np.ndarray]:
    """The KINEMATIC variables of one jet's particles (n, 4), worked out with `vector`."""
    parts = vector.array({"px": v[:, 0], "py": v[:, 1], "pz": v[:, 2], "E": v[:, 3]})
    jet = vector.obj(px=v[:, 0].sum(), py=v[:, 1].sum(), pz=v[:, 2].sum(), E=v[:, 3].sum())
    sign = 1.0 if jet.eta >= 0 else -1.0  # sign(0) counts as +1
    deta = (parts.eta - jet.eta) * sign
    dphi = wrap_into_half_open(parts.phi - jet.phi)
    return {
        "part_pt": parts.pt,
        "part_eta": parts.eta,
        "part_phi": parts.phi,
        "part_pt_log": np.log(parts.pt),
        "part_e_log": np.log(parts.E),
        "part_logptrel": np.log(parts.pt / jet.pt),
        "part_logerel": np.log(parts.E / jet.E),
        "part_deta": deta,
        "part_dphi": dphi,
        "part_deltaR": np.hypot(deta, dphi),
    }


def hand_made_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(v, mask) of float64 jets with a purpose, with junk in the padded slots."""
    rng = np.random.default_rng(seed)
    jets = []
    for eta0, phi0, n in [(1.3, 0.4, 12), (-1.7, -2.0, 20), (0.0, np.pi - 0.05, 15), (0.8, -np.pi + 0.02, 9)]:
        pt = rng.uniform(0.3, 80, n)
        eta = eta0 + rng.normal(0, 0.2, n)
        phi = wrap(phi0 + rng.normal(0, 0.2, n))
        mass = rng.choice([0.0, 0.13957, 0.49761], n)
        jets.append(np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta),
                              np.sqrt((pt * np.cosh(eta)) ** 2 + mass**2)], -1))  # fmt: skip
    # a jet at eta exactly 0 (mirror pair in z): deta = eta - 0, not flipped
    a = np.array([3.0, 1.0, 2.0, math.sqrt(14.0 + 0.0196)])
    jets.append(np.stack([a, a * [1, 1, -1, 1], np.array([0.5, -0.2, 0.0, 1.0])]))
    # a particle exactly opposite the jet in phi: dphi = pi lands on -pi
    jets.append(np.array([[10.0, 0.0, 1.0, math.sqrt(101.0 + 0.01)], [-1.0, 0.0, 0.5, math.sqrt(1.25)]]))
    n = max(len(j) for j in jets)
    v = rng.normal(0, 50, (len(jets), n, 4))  # junk in the padded slots: they must not count
    mask = np.zeros((len(jets), n), dtype=bool)
    for b, jet in enumerate(jets):
        v[b, : len(jet)] = jet
        mask[b, : len(jet)] = True
    return torch.from_numpy(v), torch.from_numpy(mask)


def test_kinematics_against_vector():
    v, mask = hand_made_batch()
    got = kinematics(v, mask)
    assert set(got) == set(KINEMATIC)
    for b in range(len(v)):
        n = int(mask[b].sum())
        expected = vector_kinematics(v[b, :n].numpy())
        for name in KINEMATIC:
            assert got[name].dtype == torch.float64
            np.testing.assert_allclose(got[name][b, :n].numpy(), expected[name], rtol=1e-12, atol=1e-12,
                                       err_msg=f"jet {b}: {name}")  # fmt: skip
        dphi = got["part_dphi"][b, :n].numpy()
        assert (dphi >= -np.pi).all() and (dphi < np.pi).all()
    # the cases worked by hand: jet eta exactly 0 keeps the sign of deta; dphi = pi becomes -pi
    eta0 = got["part_eta"][4, :3].numpy()
    assert eta0[0] > 0 and got["part_deta"][4, 0].item() == pytest.approx(eta0[0], abs=1e-12)
    assert got["part_deta"][4, 1].item() < 0
    assert got["part_dphi"][5, 1].item() == pytest.approx(-np.pi, abs=1e-12)
    # a jet at negative eta flips the sign of deta: a particle more forward than the axis has deta < 0
    jet_eta = np.arcsinh(
        v[1, :20, 2].sum().item() / math.hypot(v[1, :20, 0].sum().item(), v[1, :20, 1].sum().item())
    )
    assert jet_eta < 0
    forward = got["part_eta"][1, :20] > jet_eta
    assert (got["part_deta"][1, :20][forward] < 0).all() and (got["part_deta"][1, :20][~forward] >= 0).all()


def test_recomputer_on_junk_padding_and_float32():
    """Padded slots are zero whatever v holds there; attributes are copied; float32 in, float32 out."""
    v, mask = hand_made_batch(seed=1)
    features = feature_set("kinpid")
    recompute = FeatureRecomputer(features)
    names = features.names
    x = torch.from_numpy(np.random.default_rng(2).normal(0, 1, (*mask.shape, len(names)))).float()
    out = recompute(x, v.float(), mask)
    assert out.dtype == torch.float32
    assert (out[~mask] == 0).all()
    for c, name in enumerate(names):
        if name in KINEMATIC:
            continue
        np.testing.assert_array_equal(out[..., c][mask].numpy(), x[..., c][mask].numpy(), err_msg=name)
    for b in range(len(v)):
        n = int(mask[b].sum())
        expected = vector_kinematics(v[b, :n].float().double().numpy())
        for c, feature in enumerate(features.features):
            if feature.name not in KINEMATIC:
                continue
            value = expected[feature.name]
            if feature.center is not None:
                value = np.clip((value - feature.center) * feature.scale, feature.lo, feature.hi)
            np.testing.assert_allclose(
                out[b, :n, c].numpy(), value, rtol=1e-6, atol=1e-6, err_msg=feature.name
            )
    # raw() undoes the standardization where nothing was clipped
    raw = recompute.raw(out, "part_pt_log")[mask]
    pt = torch.hypot(v[..., 0], v[..., 1]).float()[mask]
    inside = recompute(x, v.float(), mask)[..., 0][mask].abs() < 5
    np.testing.assert_allclose(raw[inside].numpy(), torch.log(pt)[inside].numpy(), rtol=1e-5, atol=1e-5)
    assert recompute.raw(out, "part_d0") is None
