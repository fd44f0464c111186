"""Pairwise features against hand-worked values and against `vector`."""

import math

import numpy as np
import pytest
import torch
import vector

from jettag.features.pairwise import pairwise_features


def four_vector(pt, y, phi, m=0.0):
    mt = math.hypot(pt, m)
    return [pt * math.cos(phi), pt * math.sin(phi), mt * math.sinh(y), mt * math.cosh(y)]


def test_hand_worked_pair():
    # a: pt 10, y 0, phi 0; b: pt 20, y 0, phi 0.5 (massless)
    # Delta = 0.5, kT = 10 * 0.5 = 5, z = 10 / 30, m^2 = 2 * 10 * 20 * (1 - cos 0.5)
    a = torch.tensor([four_vector(10, 0, 0)], dtype=torch.float64)
    b = torch.tensor([four_vector(20, 0, 0.5)], dtype=torch.float64)
    lnkt, lnz, lndelta, lnm2 = pairwise_features(a, b)[0].tolist()
    assert lndelta == pytest.approx(math.log(0.5))
    assert lnkt == pytest.approx(math.log(5.0))
    assert lnz == pytest.approx(math.log(1 / 3))
    assert lnm2 == pytest.approx(math.log(400 * (1 - math.cos(0.5))), rel=1e-9)


def test_against_vector_on_random_pairs():
    rng = np.random.default_rng(0)
    n = 200
    pa = [four_vector(*args) for args in zip(rng.uniform(1, 100, n), rng.uniform(-2, 2, n),
                                              rng.uniform(-np.pi, np.pi, n), rng.uniform(0, 1, n), strict=True)]  # fmt: skip
    pb = [four_vector(*args) for args in zip(rng.uniform(1, 100, n), rng.uniform(-2, 2, n),
                                              rng.uniform(-np.pi, np.pi, n), rng.uniform(0, 1, n), strict=True)]  # fmt: skip
    got = pairwise_features(
        torch.tensor(pa, dtype=torch.float64), torch.tensor(pb, dtype=torch.float64)
    ).numpy()
    va = vector.array({k: np.array(pa)[:, i] for i, k in enumerate(("px", "py", "pz", "E"))})
    vb = vector.array({k: np.array(pb)[:, i] for i, k in enumerate(("px", "py", "pz", "E"))})
    delta = va.deltaRapidityPhi(vb)
    ptmin = np.minimum(va.pt, vb.pt)
    np.testing.assert_allclose(got[:, 2], np.log(delta), rtol=1e-9)
    np.testing.assert_allclose(got[:, 0], np.log(ptmin * delta), rtol=1e-9)
    np.testing.assert_allclose(got[:, 1], np.log(ptmin / (va.pt + vb.pt)), rtol=1e-9)
    np.testing.assert_allclose(got[:, 3], np.log((va + vb).mass2), rtol=1e-7)


def test_symmetric_and_clamped():
    a = torch.tensor([four_vector(30, 0.3, 1.0)], dtype=torch.float64)
    b = torch.tensor([four_vector(5, -0.4, 2.9)], dtype=torch.float64)
    torch.testing.assert_close(pairwise_features(a, b), pairwise_features(b, a))
    # a particle with itself: Delta, kT and m^2 vanish and are clamped at 1e-8; z = 1/2
    self_pair = pairwise_features(a, a)[0].tolist()
    assert self_pair[0] == pytest.approx(math.log(1e-8))
    assert self_pair[1] == pytest.approx(math.log(0.5))
    assert self_pair[2] == pytest.approx(math.log(1e-8))
    assert self_pair[3] == pytest.approx(math.log(1e-8))
