"""The shipped feature sets are exactly those of REFERENCE.md section 2 (values written out here)."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from jettag.errors import ConfigError
from jettag.features.sets import Feature, FeatureSet
from jettag.paths import config_dir

KIN = [("part_pt_log", 1.7, 0.7), ("part_e_log", 2.0, 0.7), ("part_logptrel", -4.7, 0.7),
       ("part_logerel", -4.7, 0.7), ("part_deltaR", 0.2, 4.0), ("part_deta", None, None),
       ("part_dphi", None, None)]  # fmt: skip
PID = [("part_charge", None, None)] + [
    (f"part_is{n}", None, None) for n in ("ChargedHadron", "NeutralHadron", "Photon", "Electron", "Muon")
]
TRACK = [("part_d0", None, None), ("part_d0err", 0.0, 1.0), ("part_dz", None, None), ("part_dzerr", 0.0, 1.0)]


def load(name):
    return FeatureSet.from_config(
        OmegaConf.to_container(OmegaConf.load(config_dir() / "features" / f"{name}.yaml"))
    )


@pytest.mark.parametrize(
    ("name", "expected"), [("kin", KIN), ("kinpid", KIN + PID), ("full", KIN + PID + TRACK)]
)
def test_reference_feature_sets(name, expected):
    fs = load(name)
    assert fs.max_particles == 128
    assert [(f.name, f.center, f.scale if f.center is not None else None) for f in fs.features] == expected
    for f in fs.features:
        if f.name.endswith("err"):
            assert (f.lo, f.hi) == (0.0, 1.0)
        elif f.center is not None:
            assert (f.lo, f.hi) == (-5.0, 5.0)


def test_standardization_and_clipping():
    f = Feature("part_pt_log", 1.7, 0.7)
    x = np.array([1.7, 2.7, 100.0, -100.0])
    np.testing.assert_allclose(f.transform(x), [0.0, 0.7, 5.0, -5.0])
    np.testing.assert_allclose(
        Feature("part_d0err", 0, 1, 0, 1).transform(np.array([-0.5, 0.3, 2.0])), [0, 0.3, 1]
    )
    raw = np.array([3.0, -7.0])
    assert Feature("part_deta").transform(raw) is raw


@pytest.mark.parametrize(
    "entry",
    [["part_x", "a", 1.0], ["part_x", 0, 1, 2], [3, 1.0], ["part_x", 0, 1, 1, 0]],
)
def test_bad_feature_entries_name_the_key(entry):
    with pytest.raises(ConfigError, match=r"features\.particle_features\[0\]"):
        FeatureSet.from_config({"particle_features": [entry]})


def test_round_trip_through_config():
    fs = load("full")
    assert FeatureSet.from_config(fs.to_config()) == fs
