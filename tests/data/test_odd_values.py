"""Odd values answered (issue 16, point 5): impossible particles, NaN/inf in any branch, labels that
are not one-hot, a label branch missing from some files, configuration values out of range, paths
that are directories, weights files that are not checkpoints, names that do not exist. Each stops
with one sentence naming the file, branch, jet entry or config key, or is handled by its documented
rule and counted.

Which particles are impossible is checked against `vector` (mass squared below zero, pT of zero),
not against jettag's own test.
"""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import vector
from helpers import toy_jets, write_root

import jettag
from jettag.cli import unknown_option_error
from jettag.data import JetDataModule
from jettag.errors import ConfigError, DataError, JetTagError
from jettag.features.sets import FeatureSet

KINPID = FeatureSet.from_config(
    {"name": "kinpid", "particle_features": [["part_pt_log", 1.7, 0.7], "part_e_log", "part_logptrel",
                                            "part_deta", "part_dphi", "part_charge", "part_isPhoton", "part_d0val"]}
)  # fmt: skip
N = 40
OBSERVERS = ["jet_pt", "jet_eta", "jet_phi", "jet_energy", "jet_mass", "jet_nparticles"]


def with_particle(jets: dict, branch: str, jet: int, particle: int, value) -> dict:
    """`jets` with particle `particle` of jet `jet` of `branch` set to `value`."""
    counts = ak.to_numpy(ak.num(jets[branch]))
    flat = ak.to_numpy(ak.flatten(jets[branch])).astype(np.float64)
    flat[int(counts[:jet].sum()) + particle] = value
    return {**jets, branch: ak.unflatten(flat.astype(np.float32), counts)}


def particle_of(jets: dict, jet: int, particle: int) -> vector.MomentumObject4D:
    px, py, pz, e = (float(jets[b][jet][particle]) for b in ("part_px", "part_py", "part_pz", "part_energy"))
    return vector.obj(px=px, py=py, pz=pz, E=e)


def read(path, **kw) -> JetDataModule:
    dm = JetDataModule(KINPID, train_files=[str(path)], progress=False, observers=OBSERVERS, **kw)
    dm.dataset("train")
    return dm


def one_sentence(err) -> str:
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message, message
    return message


@pytest.fixture(scope="module")
def jets():
    return toy_jets(N, seed=3)


# --- physically impossible particles --------------------------------------------------------------


def negative_energy(jets):
    return with_particle(jets, "part_energy", 3, 0, -5.0)


def energy_below_p(jets):
    p = particle_of(jets, 5, 0).p
    return with_particle(jets, "part_energy", 5, 0, 0.5 * p)


def zero_pt(jets):
    out = with_particle(jets, "part_px", 7, 1, 0.0)
    return with_particle(out, "part_py", 7, 1, 0.0)


@pytest.mark.parametrize(
    "damage, entry, particle, words",
    [
        (negative_energy, 3, 0, "negative energy"),
        (energy_below_p, 5, 0, "energy below |p|"),
        (zero_pt, 7, 1, "zero pT"),
    ],
    ids=["negative-energy", "energy-below-p", "zero-pt"],
)
def test_impossible_particles_stop_or_are_skipped_and_counted(jets, tmp_path, damage, entry, particle, words):
    odd = damage(jets)
    four = particle_of(odd, entry, particle)
    assert four.E < 0 or four.mass2 < 0 or four.pt == 0  # impossible, by vector's arithmetic
    path = write_root(tmp_path / "odd.root", odd)
    with pytest.raises(DataError) as err:
        read(path)
    message = one_sentence(err)
    for word in (
        str(path),
        f"entry {entry}",
        f"particle {particle}",
        words,
        "data.drop_unphysical_jets=true",
    ):
        assert word in message, message
    dm = read(path, drop_unphysical_jets=True)
    assert len(dm.datasets["train"]) == N - 1
    assert dm.summary()["train"]["skipped"] == {"unphysical_particle": 1}


def test_massless_particles_rounded_below_p_are_kept(jets, tmp_path):
    """E below |p| by float32 rounding (a photon written as px, py, pz, E) is not an error."""
    p = particle_of(jets, 2, 0).p
    odd = with_particle(jets, "part_energy", 2, 0, p * (1 - 2e-6))
    assert particle_of(odd, 2, 0).mass2 < 0  # imaginary, by a hair
    assert len(read(write_root(tmp_path / "rounded.root", odd)).datasets["train"]) == N


# --- NaN and inf in any branch read ---------------------------------------------------------------

BRANCHES = ["part_px", "part_py", "part_pz", "part_energy", "part_charge", "part_isPhoton", "part_d0val",
            "jet_pt", "jet_eta", "jet_phi", "jet_energy", "jet_mass"]  # fmt: skip


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("branch", BRANCHES)
def test_nan_or_inf_in_any_branch_names_branch_and_entry(jets, tmp_path, branch, value):
    if branch.startswith("part_"):
        odd = with_particle(jets, branch, 11, 0, value)
    else:
        odd = {**jets, branch: np.where(np.arange(N) == 11, value, np.asarray(jets[branch], np.float64))}
    path = write_root(tmp_path / "nonfinite.root", odd)
    with pytest.raises(DataError) as err:
        read(path)
    message = one_sentence(err)
    for word in (str(path), "entry 11"):
        assert word in message, message
    assert branch in message or "not finite" in message, message
    dm = read(path, drop_nonfinite_jets=True, drop_unphysical_jets=True)
    assert len(dm.datasets["train"]) == N - 1
    assert sum(dm.summary()["train"]["skipped"].values()) == 1


# --- labels ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "qcd, top, shown",
    [
        (0.5, 0.5, "label_QCD=0.5, label_Tbqq=0.5"),
        (1, 1, "label_QCD=1, label_Tbqq=1"),
        (0, 0, "label_QCD=0, label_Tbqq=0"),
        (np.nan, 0, "label_QCD=nan"),
    ],
    ids=["fractional", "several", "none", "nan"],
)
def test_labels_that_are_not_one_hot_name_the_entry(jets, tmp_path, qcd, top, shown):
    odd = dict(jets)
    odd["label_QCD"] = np.asarray(jets["label_QCD"], np.float32).copy()
    odd["label_Tbqq"] = np.asarray(jets["label_Tbqq"], np.float32).copy()
    odd["label_QCD"][6], odd["label_Tbqq"][6] = qcd, top
    path = write_root(tmp_path / "labels.root", odd)
    with pytest.raises(DataError) as err:
        read(path)
    message = one_sentence(err)
    assert str(path) in message and "not one-hot at entry 6" in message and shown in message, message


def test_a_label_branch_missing_from_one_file(jets, tmp_path):
    good = write_root(tmp_path / "good.root", jets)
    unlabelled = write_root(
        tmp_path / "unlabelled.root", {k: v for k, v in jets.items() if k != "label_Tbqq"}
    )
    with pytest.raises(DataError) as err:
        JetDataModule(KINPID, train_files=[good, unlabelled], progress=False).dataset("train")
    message = one_sentence(err)
    assert "unlabelled.root" in message and "label_Tbqq" in message, message


# --- configuration values -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, value",
    [
        ("batch_size", 0),
        ("eval_batch_size", -1),
        ("eval_batch_size", 0),
        ("chunk_size", 0),
        ("piece_size", -3),
        ("shuffle_buffer", 0),
        ("fit_max_jets", 0),
        ("num_workers", -1),
        ("in_memory_max_jets", -5),
        ("fit_fraction", 0.0),
        ("fit_fraction", 1.5),
        ("streaming", "sometimes"),
        ("on_bad_file", "ignore"),
        ("standardization", "z"),
    ],
)
def test_data_values_out_of_range_name_the_key(jets, tmp_path, key, value):
    with pytest.raises(ConfigError) as err:
        JetDataModule(KINPID, train_files=[str(tmp_path / "x.root")], **{key: value})
    assert f"data.{key}" in one_sentence(err)


def test_feature_and_task_values_out_of_range():
    with pytest.raises(ConfigError, match=r"max_particles must be at least 1"):
        FeatureSet.from_config({"name": "k", "particle_features": ["part_pt_log"], "max_particles": 0})
    import torch

    from jettag.models import ParticleFlowNetwork, ParticleTransformer
    from jettag.tasks.contrastive import ContrastivePretrainer
    from jettag.tasks.pretrain import MaskedParticlePretrainer

    part = ParticleTransformer(input_dim=8, num_classes=2, embed_dims=[8, 8], pair_embed_dims=[4], num_heads=2,
                               num_layers=1, num_cls_layers=1)  # fmt: skip
    for fraction in (0.0, 1.0, 1.5, -0.2):
        with pytest.raises(ConfigError, match=r"task.mask_fraction"):
            MaskedParticlePretrainer(
                model=part, optimizer=torch.optim.AdamW, features=KINPID, mask_fraction=fraction
            )
    pfn = ParticleFlowNetwork(input_dim=8, num_classes=2, phi_dims=[4], f_dims=[4])
    for temperature in (0.0, -1.0):
        with pytest.raises(ConfigError, match=r"task.temperature"):
            ContrastivePretrainer(
                model=pfn, optimizer=torch.optim.AdamW, features=KINPID, temperature=temperature
            )


@pytest.mark.parametrize(
    "settings, key",
    [
        ({"embed_dims": [0, 8]}, "model.embed_dims"),
        ({"num_heads": 0}, "model.num_heads"),
        ({"num_layers": -1}, "model.num_layers"),
        ({"fc_params": [[0, 0.1]]}, "model.fc_params"),
        ({"dropout": 1.0}, "model.dropout"),
        ({"attn_dropout": -0.1}, "model.attn_dropout"),
    ],
)
def test_model_sizes_out_of_range_name_the_key(settings, key):
    from jettag.pipeline import build_model

    cfg = {"_target_": "jettag.models.ParticleTransformer", "embed_dims": [8, 8], "pair_embed_dims": [4],
           "num_heads": 2, "num_layers": 1, "num_cls_layers": 1, **settings}  # fmt: skip
    with pytest.raises(ConfigError) as err:
        build_model(cfg, input_dim=4, num_classes=2)
    assert one_sentence(err).startswith(key)


def test_directories_and_files_that_are_not_checkpoints(tmp_path):
    from jettag.checkpoint import read_torch_file
    from jettag.pipeline import resolve_ckpt_path

    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    weights = tmp_path / "weights.pt"
    import torch

    torch.save({"fc.weight": torch.zeros(2, 2)}, weights)  # a state dict, not a training checkpoint
    cases = [
        (lambda: resolve_ckpt_path(str(tmp_path), tmp_path), ["ckpt_path", "is a directory"]),
        (
            lambda: resolve_ckpt_path(str(text), tmp_path),
            ["ckpt_path", "notes.txt", "not a readable PyTorch"],
        ),
        (
            lambda: resolve_ckpt_path(str(weights), tmp_path),
            ["ckpt_path", "weights.pt", "not a training checkpoint"],
        ),
        (lambda: read_torch_file(text, key="task.backbone"), ["task.backbone", "notes.txt"]),
        (lambda: read_torch_file(tmp_path, key="task.backbone"), ["task.backbone", "is a directory"]),
        (lambda: jettag.load(text), ["notes.txt"]),
    ]
    for call, words in cases:
        with pytest.raises(JetTagError) as err:
            call()
        message = one_sentence(err)
        for word in words:
            assert word in message, message


@pytest.mark.parametrize(
    "arg, words",
    [
        ("model=nope", ["model=nope", "no model 'nope'", "part_small", "pfn"]),
        ("features=nope", ["no feature set 'nope'", "kinpid"]),
        ("task=nope", ["no task 'nope'", "contrastive"]),
        ("logger=[csv,nope]", ["no logger 'nope'"]),
        ("experiment=nope", ["no experiment 'nope'", "top_part"]),
    ],
)
def test_names_that_do_not_exist(arg, words):
    message = unknown_option_error([arg])
    for word in words:
        assert word in message, message
    assert (
        unknown_option_error(["model=part,pfn", "features=kin", "logger=[csv]", "data.batch_size=3"]) is None
    )
    assert unknown_option_error([arg, "--config-dir=/my/configs"]) is None  # the user's own configs
