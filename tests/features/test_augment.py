"""Jet augmentations (`jettag.features.augment`) conserve exactly what the module docstring says.

Every expectation is worked out here with `vector` from the four-momenta before and after, on small
random float64 batches of massive and massless particles (so equalities hold to ~1e-9 relative).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import vector
import yaml

from jettag.errors import ConfigError
from jettag.features.augment import Augmenter, Particles, Rotate, Smear, Split, Translate, sort_by_pt
from jettag.features.recompute import FeatureRecomputer
from jettag.features.sets import FeatureSet
from jettag.paths import config_dir

# (mass in GeV, charge, PID flag) of the particle species
SPECIES = [
    (0.0, 0, "part_isPhoton"),
    (0.000511, -1, "part_isElectron"),
    (0.10566, 1, "part_isMuon"),
    (0.13957, 1, "part_isChargedHadron"),
    (0.13957, -1, "part_isChargedHadron"),
    (0.49761, 0, "part_isNeutralHadron"),
]
IDENTITY = ["part_charge", "part_isChargedHadron", "part_isNeutralHadron", "part_isPhoton", "part_isElectron",
            "part_isMuon"]  # fmt: skip
KINEMATIC = {
    "part_pt_log",
    "part_e_log",
    "part_logptrel",
    "part_logerel",
    "part_deltaR",
    "part_deta",
    "part_dphi",
}


def kinpid(max_particles: int = 64, tag: bool = False) -> FeatureSet:
    """configs/features/kinpid.yaml; with `tag`, one more (user) column numbering the particles."""
    with open(config_dir() / "features" / "kinpid.yaml") as f:
        cfg = yaml.safe_load(f)
    cfg["max_particles"] = max_particles
    if tag:
        cfg["particle_features"].append(["part_tag", None])
    return FeatureSet.from_config(cfg)


def wrap(phi):
    return (np.asarray(phi) + np.pi) % (2 * np.pi) - np.pi


def make_batch(features: FeatureSet, jets: int = 8, n: int = 30, seed: int = 0, pt_min: float = 0.2,
               dtype=torch.float64) -> Particles:  # fmt: skip
    """Jets of massive and massless particles of pT > pt_min in decreasing pT, padding last; x carries
    the charge and PID columns (and `part_tag`: 1, 2, ... over the batch); its kinematic columns are junk."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(2, n + 1, jets)
    counts[0], counts[1] = n, 1
    axis_eta = rng.uniform(-2, 2, jets)
    axis_phi = rng.uniform(-np.pi, np.pi, jets)
    axis_phi[0], axis_phi[2] = np.pi - 0.03, -np.pi + 0.05  # jets across phi = +-pi
    v = np.zeros((jets, n, 4))
    x = np.zeros((jets, n, features.num_features))
    mask = np.arange(n) < counts[:, None]
    names = features.names
    tag = 1
    for b, k in enumerate(counts):
        pt = np.sort(pt_min + rng.dirichlet(np.full(k, 0.7)) * rng.uniform(100, 400))[::-1]
        eta = axis_eta[b] + rng.normal(0, 0.15, k)
        phi = wrap(axis_phi[b] + rng.normal(0, 0.15, k))
        species = rng.integers(0, len(SPECIES), k)
        mass = np.array([s[0] for s in SPECIES])[species]
        v[b, :k] = np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta),
                             np.sqrt((pt * np.cosh(eta)) ** 2 + mass**2)], -1)  # fmt: skip
        x[b, :k] = rng.normal(0, 1, (k, len(names)))  # the kinematic columns: junk, recomputed
        x[b, :k, names.index("part_charge")] = [SPECIES[s][1] for s in species]
        for flag in IDENTITY[1:]:
            x[b, :k, names.index(flag)] = [SPECIES[s][2] == flag for s in species]
        if "part_tag" in names:
            x[b, :k, names.index("part_tag")] = np.arange(tag, tag + k)
            tag += k
    return Particles(torch.from_numpy(x).to(dtype), torch.from_numpy(v).to(dtype), torch.from_numpy(mask))


def vectors(p: Particles, b: int) -> vector.MomentumNumpy4D:
    """The real particles of jet b, as `vector` wants them."""
    v = p.v[b][p.mask[b]].double().numpy()
    return vector.array({"px": v[:, 0], "py": v[:, 1], "pz": v[:, 2], "E": v[:, 3]})


def jet_sum(p: Particles, b: int) -> np.ndarray:
    parts = vectors(p, b)
    total = vector.obj(px=0.0, py=0.0, pz=0.0, E=0.0)
    for i in range(len(parts)):
        total = total + parts[i]
    return np.array([total.px, total.py, total.pz, total.E])


def assert_same_mass2(after, before, energy):
    """Equal masses squared, to float64 rounding of E^2 - p^2 (massless particles included)."""
    assert np.all(np.abs(after.mass2 - before.mass2) <= 1e-13 * energy**2 + 1e-9 * np.abs(before.mass2))


def pairs(n: int):
    return np.triu_indices(n, 1)


def padded_slots_are_zero(p: Particles):
    assert (p.v[~p.mask] == 0).all() and (p.x[~p.mask] == 0).all()
    # padding last
    counts = p.mask.sum(1, keepdim=True)
    assert torch.equal(p.mask, torch.arange(p.mask.shape[1]) < counts)


@pytest.fixture
def batch():
    return make_batch(kinpid())


def generator(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_rotate_keeps_pt_mass_and_every_distance_in_rapidity_phi(batch):
    out = Rotate()(batch, generator())
    assert out.v.dtype == torch.float64 and torch.equal(out.mask, batch.mask) and torch.equal(out.x, batch.x)
    padded_slots_are_zero(out)
    turned = []
    for b in range(len(batch.mask)):
        before, after = vectors(batch, b), vectors(out, b)
        np.testing.assert_allclose(after.pt, before.pt, rtol=1e-12)
        assert_same_mass2(after, before, before.E)
        i, j = pairs(len(before))
        np.testing.assert_allclose(
            after[i].deltaRapidityPhi(after[j]), before[i].deltaRapidityPhi(before[j]), rtol=1e-9, atol=1e-12
        )
        if len(before) < 2:
            np.testing.assert_allclose(after.rapidity, before.rapidity, atol=1e-12)
            continue
        # a rotation (not a reflection): every pair's direction in (y, phi) turns by the same angle
        dy_b, dphi_b = before[j].rapidity - before[i].rapidity, before[j].deltaphi(before[i])
        dy_a, dphi_a = after[j].rapidity - after[i].rapidity, after[j].deltaphi(after[i])
        angle = wrap(np.arctan2(dphi_a, dy_a) - np.arctan2(dphi_b, dy_b))
        np.testing.assert_allclose(wrap(angle - angle[0]), 0, atol=1e-8)
        turned.append(angle[0])
        # about the pT-weighted centroid in (y, phi): it stays where it was
        w = before.pt / before.pt.sum()
        ref = before[0].phi
        centroid_b = (w @ before.rapidity, w @ wrap(before.phi - ref))
        centroid_a = (w @ after.rapidity, w @ wrap(after.phi - ref))
        np.testing.assert_allclose(centroid_a, centroid_b, atol=1e-10)
    # it changes the particles: the angles are drawn, not all (near) zero
    assert np.abs(turned).max() > 0.5 and len(set(np.round(turned, 6))) == len(turned)
    moved = (out.v - batch.v)[batch.mask].abs().amax(-1)
    assert (moved > 1e-3).float().mean() > 0.5


def test_translate_boost_keeps_pt_phi_mass_and_pair_mass_and_shifts_every_rapidity_alike(batch):
    out = Translate(max_shift=1.0, beam_rotation=False)(batch, generator())
    padded_slots_are_zero(out)
    shifts = []
    for b in range(len(batch.mask)):
        before, after = vectors(batch, b), vectors(out, b)
        np.testing.assert_allclose(after.pt, before.pt, rtol=1e-12)
        np.testing.assert_allclose(after.deltaphi(before), 0, atol=1e-12)
        assert_same_mass2(after, before, before.E)
        i, j = pairs(len(before))
        pair_b, pair_a = before[i] + before[j], after[i] + after[j]
        assert_same_mass2(pair_a, pair_b, pair_b.E + pair_a.E)
        shift = after.rapidity - before.rapidity
        np.testing.assert_allclose(shift, shift[0], rtol=0, atol=1e-9)
        assert abs(shift[0]) <= 1.0
        shifts.append(shift[0])
    assert np.abs(shifts).max() > 0.2 and np.ptp(shifts) > 0.2


def test_translate_beam_rotation_keeps_pt_rapidity_and_energy(batch):
    out = Translate(max_shift=0.0, beam_rotation=True)(batch, generator())
    padded_slots_are_zero(out)
    turns = []
    for b in range(len(batch.mask)):
        before, after = vectors(batch, b), vectors(out, b)
        np.testing.assert_allclose(after.pt, before.pt, rtol=1e-12)
        np.testing.assert_allclose(after.rapidity, before.rapidity, rtol=0, atol=1e-9)
        np.testing.assert_allclose(after.E, before.E, rtol=1e-12)
        turn = after.deltaphi(before)  # one angle for the whole jet
        np.testing.assert_allclose(wrap(turn - turn[0]), 0, atol=1e-9)
        turns.append(turn[0])
    assert np.abs(turns).max() > 0.5


def test_smear_keeps_pt_and_mass_and_moves_soft_particles_more_than_hard_ones():
    batch = make_batch(kinpid(), jets=16, n=40, seed=3, pt_min=0.05)
    scale, floor = 0.05, 0.5  # below pt_floor, particles move as if they had pt_floor
    out = Smear(scale=scale, pt_floor=floor)(batch, generator(4))
    padded_slots_are_zero(out)
    pt, moved, pulls = [], [], []
    for b in range(len(batch.mask)):
        before, after = vectors(batch, b), vectors(out, b)
        np.testing.assert_allclose(after.pt, before.pt, rtol=1e-12)
        assert_same_mass2(after, before, np.maximum(before.E, after.E))
        pt.append(before.pt)
        moved.append(after.deltaRapidityPhi(before))
        width = scale / np.maximum(before.pt, floor)
        pulls += [(after.rapidity - before.rapidity) / width, after.deltaphi(before) / width]
    pt, moved, pulls = np.concatenate(pt), np.concatenate(moved), np.concatenate(pulls)
    hard, soft = pt > 10, pt < 1
    assert hard.sum() > 20 and soft.sum() > 20 and (pt < floor).sum() > 20
    assert moved[hard].max() < 0.05 and np.median(moved[soft]) > 20 * np.median(moved[hard])
    # y and phi move by N(0, scale / max(pT, pt_floor))
    assert 0.85 < pulls.std() < 1.15 and abs(pulls.mean()) < 0.15


def match_pieces(before: vector.MomentumNumpy4D, after: vector.MomentumNumpy4D) -> list[np.ndarray]:
    """For each particle before, the particles after in exactly its direction (itself, or its halves)."""
    same = (np.abs(after.eta[None, :] - before.eta[:, None]) < 1e-9) & (
        np.abs(wrap(after.phi[None, :] - before.phi[:, None])) < 1e-9
    )
    assert (same.sum(0) == 1).all(), "every particle after comes from exactly one before"
    return [np.flatnonzero(row) for row in same]


def four(vs) -> np.ndarray:
    return np.stack([vs.px, vs.py, vs.pz, vs.E], -1)


def check_split(before_p: Particles, after_p: Particles, features: FeatureSet) -> np.ndarray:
    """Jet sums kept, each particle kept or in two collinear halves with its attributes; padding last,
    decreasing pT. Returns, per particle before, whether it was split."""
    padded_slots_are_zero(after_p)
    attributes = [i for i, name in enumerate(features.names) if name not in KINEMATIC]
    was_split = np.zeros(before_p.mask.shape, dtype=bool)
    for b in range(len(before_p.mask)):
        before, after = vectors(before_p, b), vectors(after_p, b)
        np.testing.assert_allclose(
            jet_sum(after_p, b), jet_sum(before_p, b), rtol=0, atol=1e-12 * before.E.sum()
        )
        pt = after.pt
        assert np.all(np.diff(pt) <= 0), "decreasing pT"
        pieces = match_pieces(before, after)
        x_before = before_p.x[b][before_p.mask[b]][:, attributes]
        x_after = after_p.x[b][after_p.mask[b]][:, attributes]
        for i, piece in enumerate(pieces):
            assert len(piece) in (1, 2)
            np.testing.assert_allclose(
                four(after[piece]).sum(0), four(before[i : i + 1])[0], rtol=1e-12, atol=1e-12
            )
            assert torch.equal(x_after[piece], x_before[i].expand(len(piece), -1))
            was_split[b, i] = len(piece) == 2
        assert len(after) == len(before) + was_split[b].sum()
    return was_split


def test_split_keeps_the_jet_and_gives_each_half_the_originals_attributes(batch):
    features = kinpid()
    out = Split(fraction=0.4, neutral_only=False, max_particles=64)(batch, generator())
    assert out.v.dtype == torch.float64
    was_split = check_split(batch, out, features)
    assert 0.2 < was_split.sum() / batch.mask.sum() < 0.6
    assert (out.mask.sum(1) > batch.mask.sum(1)).any()


def test_split_never_exceeds_max_particles(batch):
    features = kinpid(max_particles=40)
    counts = batch.mask.sum(1)
    out = Split(fraction=1.0, neutral_only=False, max_particles=40)(batch, generator())
    check_split(batch, out, features)
    assert torch.equal(out.mask.sum(1), torch.clamp(2 * counts, max=40))
    full = Split(fraction=1.0, neutral_only=False, max_particles=30)(batch, generator())
    check_split(batch, full, features)
    assert (full.mask.sum(1) <= 30).all() and full.mask[0].sum() == 30  # jet 0 is full: not split


def test_split_with_neutral_only_splits_neutral_particles_only(batch):
    features = kinpid()
    charge = features.names.index("part_charge")
    neutral = (batch.x[..., charge] == 0) & batch.mask
    assert neutral.sum() > 10 and (batch.mask & ~neutral).sum() > 10
    split = Split(fraction=1.0, neutral_only=True, max_particles=64)
    with pytest.raises(ConfigError, match="charge"):
        split(batch, generator())  # it cannot tell neutral particles without being told their charge
    split.charge = lambda x: x[..., charge]
    was_split = check_split(batch, split(batch, generator()), features)
    assert np.array_equal(was_split, neutral.numpy())
    # through Augmenter: neutral_only is 'auto', on since charge and PID are inputs
    augment = Augmenter(FeatureRecomputer(features), [["split"]], {"split": {"fraction": 1.0}})
    (view,) = augment(batch.x, batch.v, batch.mask, generator())
    assert np.array_equal(check_split(batch, view, features), neutral.numpy())
    # the PID flags alone tell the charge too
    no_charge = FeatureSet(features.name, tuple(f for f in features.features if f.name != "part_charge"), 64)
    keep = [i for i, name in enumerate(features.names) if name != "part_charge"]
    flags_only = Particles(batch.x[..., keep], batch.v, batch.mask)
    augment = Augmenter(FeatureRecomputer(no_charge), [["split"]], {"split": {"fraction": 1.0}})
    (view,) = augment(flags_only.x, flags_only.v, flags_only.mask, generator())
    assert np.array_equal(check_split(flags_only, view, no_charge), neutral.numpy())
    # and without charge or PID inputs every particle may split
    kin = FeatureSet("kin", tuple(f for f in features.features if f.name in KINEMATIC), 64)
    kin_cols = [i for i, name in enumerate(features.names) if name in KINEMATIC]
    augment = Augmenter(FeatureRecomputer(kin), [["split"]], {"split": {"fraction": 1.0}})
    (view,) = augment(batch.x[..., kin_cols], batch.v, batch.mask, generator())
    assert torch.equal(view.mask.sum(1), 2 * batch.mask.sum(1))
    # where it cannot be told which particles are neutral, neutral_only=true is an error, not ignored
    with pytest.raises(ConfigError, match="neutral_only=true"):
        Augmenter(FeatureRecomputer(kin), [["split"]], {"split": {"neutral_only": True}})


def test_split_of_nothing_is_the_identity(batch):
    out = Split(fraction=0.0, neutral_only=False)(batch, generator())
    assert torch.equal(out.v, batch.v) and torch.equal(out.x, batch.x) and torch.equal(out.mask, batch.mask)


def test_sort_by_pt_moves_attributes_with_their_particle():
    features = kinpid(tag=True)
    p = make_batch(features, jets=4, n=12, seed=5)
    rng = np.random.default_rng(0)
    order = torch.from_numpy(np.stack([rng.permutation(12) for _ in range(4)]))  # padding in the middle too
    junk = torch.where(p.mask[..., None], p.v, torch.from_numpy(rng.uniform(100, 200, p.v.shape)))
    shuffled = Particles(
        torch.gather(p.x, 1, order[..., None].expand_as(p.x)),
        torch.gather(junk, 1, order[..., None].expand_as(p.v)),  # padded slots hold junk: last all the same
        torch.gather(p.mask, 1, order),
    )
    out = sort_by_pt(shuffled)
    assert torch.equal(out.mask, p.mask)
    assert torch.equal(out.v[p.mask], p.v[p.mask]) and torch.equal(out.x[p.mask], p.x[p.mask])


def expected_features(p: Particles, features: FeatureSet) -> np.ndarray:
    """The standardized kinematic columns of `p` worked out with `vector` (others: NaN)."""
    out = np.full((*p.mask.shape, features.num_features), np.nan)
    for b in range(len(p.mask)):
        parts = vectors(p, b)
        jet = vector.obj(**dict(zip(("px", "py", "pz", "E"), jet_sum(p, b), strict=True)))
        deta = (parts.eta - jet.eta) * (1.0 if jet.eta >= 0 else -1.0)
        dphi = wrap(parts.phi - jet.phi)
        raw = {
            "part_pt_log": np.log(parts.pt),
            "part_e_log": np.log(parts.E),
            "part_logptrel": np.log(parts.pt / jet.pt),
            "part_logerel": np.log(parts.E / jet.E),
            "part_deltaR": np.hypot(deta, dphi),
            "part_deta": deta,
            "part_dphi": dphi,
        }
        for c, f in enumerate(features.features):
            if f.name in raw:
                value = raw[f.name]
                if f.center is not None:
                    value = np.clip((value - f.center) * f.scale, f.lo, f.hi)
                out[b, : len(parts), c] = value
    return out


JETCLR = [["rotate", "translate"], ["rotate", "translate", "smear", "split"]]


def test_augmenter_views_are_the_recomputed_features_of_the_augmented_particles():
    features = kinpid(tag=True)
    batch = make_batch(features, seed=6)
    x0, v0 = batch.x.clone(), batch.v.clone()
    recompute = FeatureRecomputer(features)
    augment = Augmenter(recompute, JETCLR, {"split": {"fraction": 0.5}, "translate": {"max_shift": 0.5}})
    views = augment(batch.x, batch.v, batch.mask, generator(7))
    assert torch.equal(batch.x, x0) and torch.equal(batch.v, v0), "the input is not changed"
    assert len(views) == 2
    names = features.names
    tag, charge = names.index("part_tag"), names.index("part_charge")
    attributes = [i for i, name in enumerate(names) if name not in KINEMATIC]
    tags = batch.x[..., tag][batch.mask].long()
    originals = dict(zip(tags.tolist(), batch.x[batch.mask][:, attributes], strict=True))
    pt0 = dict(
        zip(tags.tolist(), torch.hypot(batch.v[..., 0], batch.v[..., 1])[batch.mask].tolist(), strict=True)
    )
    for k, view in enumerate(views):
        padded_slots_are_zero(view)
        assert view.x.dtype == torch.float64 and view.v.dtype == torch.float64
        assert torch.equal(view.x, recompute(view.x, view.v, view.mask))
        expected = expected_features(view, features)
        kinematic = ~np.isnan(expected)
        np.testing.assert_allclose(view.x.numpy()[kinematic], expected[kinematic], rtol=1e-9, atol=1e-9)
        # every particle's attributes are those of the particle it came from (its tag); rotate,
        # translate and smear keep its pT and split shares it between the halves
        view_tags = view.x[..., tag][view.mask].long()
        for t, row in zip(view_tags.tolist(), view.x[view.mask][:, attributes], strict=True):
            assert torch.equal(row, originals[t])
        pt = torch.hypot(view.v[..., 0], view.v[..., 1])[view.mask]
        total = torch.zeros(int(tags.max()) + 1, dtype=torch.float64).index_add_(0, view_tags, pt)
        np.testing.assert_allclose(total[tags].numpy(), [pt0[t] for t in tags.tolist()], rtol=1e-12)
        grew = int(view.mask.sum() - batch.mask.sum())
        assert grew == 0 if k == 0 else grew > 0
        assert (view.x[..., charge][view.mask].abs() <= 1).all()
    # float32 in, float32 out
    views32 = augment(batch.x.float(), batch.v.float(), batch.mask, generator(7))
    assert all(v.x.dtype == torch.float32 and v.v.dtype == torch.float32 for v in views32)


def test_augmenter_with_a_seeded_generator_is_reproducible(batch):
    augment = Augmenter(FeatureRecomputer(kinpid()), JETCLR)
    first = augment(batch.x, batch.v, batch.mask, generator(11))
    again = augment(batch.x, batch.v, batch.mask, generator(11))
    other = augment(batch.x, batch.v, batch.mask, generator(12))
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a.x, b.x) and torch.equal(a.v, b.v) and torch.equal(a.mask, b.mask)
    assert not torch.equal(first[0].v, other[0].v)
    assert not torch.equal(first[0].v, first[1].v[:, : first[0].v.shape[1]])


@pytest.mark.parametrize(
    ("views", "settings", "match"),
    [
        ([["rotate", "boost"]], None, r"task\.views\[0\].*boost"),
        ([["rotate"]], {"shear": {}}, r"task\.augmentations\.shear"),
        ([["rotate"]], {"rotate": {"angle": 1.0}}, r"task\.augmentations\.rotate"),
        ([["smear"]], {"smear": {"sigma": 0.2}}, r"task\.augmentations\.smear"),
        ([["split"]], {"split": {"fraction": 1.5}}, r"task\.augmentations\.split\.fraction"),
        ([["translate"]], {"translate": {"max_shift": -1}}, r"max_shift"),
        ([["smear"]], {"smear": {"pt_floor": 0}}, r"pt_floor"),
        ([["split"]], {"split": {"neutral_only": "yes"}}, r"task\.augmentations\.split\.neutral_only"),
    ],
)
def test_augmenter_unknown_names_and_settings_are_config_errors(views, settings, match):
    with pytest.raises(ConfigError, match=match):
        Augmenter(FeatureRecomputer(kinpid()), views, settings)


def test_rotation_keeps_a_two_particle_jet_distance():
    """Hand-worked: two massless particles at (y, phi) = (0, +-0.1) are 0.2 apart after any rotation."""
    v = torch.tensor([[[10 * math.cos(0.1), 10 * math.sin(0.1), 0.0, 10.0],
                       [5 * math.cos(-0.1), 5 * math.sin(-0.1), 0.0, 5.0]]], dtype=torch.float64)  # fmt: skip
    p = Particles(torch.zeros(1, 2, 13, dtype=torch.float64), v, torch.ones(1, 2, dtype=torch.bool))
    for seed in range(5):
        out = vectors(Rotate()(p, generator(seed)), 0)
        assert out[0].deltaRapidityPhi(out[1]) == pytest.approx(0.2, abs=1e-12)
        np.testing.assert_allclose(out.pt, [10, 5], rtol=1e-12)
