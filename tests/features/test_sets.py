"""Feature entries, standardization and the config round trip (the shipped sets against the published
layout: test_published_layout.py)."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from jettag.errors import ConfigError
from jettag.features.sets import Feature, FeatureSet
from jettag.paths import config_dir


def load(name):
    return FeatureSet.from_config(
        OmegaConf.to_container(OmegaConf.load(config_dir() / "features" / f"{name}.yaml"))
    )


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
