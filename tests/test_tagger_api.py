"""The Python API an analysis uses: `jettag.load` and `Tagger.predict` on a tiny trained run.

Scores from awkward arrays, dicts and files must equal `jettag-predict`'s on the same file (the CLI's
own output, read back with uproot), whatever the chunk size, rows in input order; a tagger pickles and
scores in `dask_awkward.map_partitions` and through coffea's ML inference wrapper with the same
numbers; jets lacking an input stop with one sentence naming the fields.
"""

from __future__ import annotations

import pickle

import awkward as ak
import numpy as np
import pytest
import uproot
from helpers import run_cli, toy_jets, write_root

import jettag
from jettag.errors import ConfigError, DataError

TINY = ["model=part_small", "model.embed_dims=[16,16]", "model.pair_embed_dims=[8]", "model.num_heads=2",
        "model.num_layers=1", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "data.batch_size=32",
        "features=kinpid", "features.max_particles=40"]  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(toy_root_files, tmp_path_factory):
    run = tmp_path_factory.mktemp("api_run")
    files = [f"data.{split}_files=[{path}]" for split, path in toy_root_files.items()]
    result = run_cli("jettag-train", *TINY, *files, f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def tagger(run_dir):
    return jettag.load(run_dir)


@pytest.fixture(scope="module")
def cli_scores(run_dir, toy_root_files, tmp_path_factory):
    """jettag-predict's scores of the test file, as it writes them."""
    out = tmp_path_factory.mktemp("api_predict") / "scores.root"
    result = run_cli(
        "jettag-predict", f"run_dir={run_dir}", f"files=[{toy_root_files['test']}]", f"output={out}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    events = uproot.open(out)["Events"].arrays(library="np")
    return np.stack([events["score_label_QCD"], events["score_label_Tbqq"]], axis=1)


def test_the_tagger_knows_its_classes_and_inputs(tagger):
    assert tagger.classes == ["label_QCD", "label_Tbqq"]
    assert tagger.features[:2] == ["part_pt_log", "part_e_log"] and tagger.features[-2:] == [
        "part_deta",
        "part_dphi",
    ]
    assert {"part_px", "part_py", "part_pz", "part_energy", "part_charge", "part_isPhoton"} <= set(
        tagger.branches
    )
    assert "Tagger(ParticleTransformer" in repr(tagger) and tagger.max_particles == 40


def test_scores_equal_jettag_predict_from_arrays_dicts_and_files(tagger, toy_root_files, cli_scores):
    path = toy_root_files["test"]
    arrays = uproot.open(path)["tree"].arrays()
    from_arrays = tagger.predict(arrays)
    assert from_arrays.shape == (len(arrays), 2) and from_arrays.dtype == np.float32
    np.testing.assert_allclose(from_arrays, cli_scores, rtol=0, atol=1e-6)
    np.testing.assert_allclose(tagger.predict({k: arrays[k] for k in arrays.fields}), cli_scores, atol=1e-6)
    np.testing.assert_allclose(tagger.predict(path, chunk_size=64), cli_scores, atol=1e-6)
    np.testing.assert_allclose(tagger.predict([path], batch_size=7, chunk_size=50), cli_scores, atol=1e-6)
    np.testing.assert_allclose(tagger.predict(arrays, chunk_size=33), cli_scores, atol=1e-6)
    # rows follow the input: reversed jets give reversed rows
    np.testing.assert_allclose(tagger.predict(arrays[::-1]), cli_scores[::-1], atol=1e-6)
    np.testing.assert_allclose(from_arrays.sum(axis=1), 1.0, atol=1e-5)


def test_a_jet_without_particles_keeps_its_row(tagger, tmp_path):
    jets = toy_jets(5, seed=9)
    counts = [len(x) for x in jets["part_px"]]
    emptied = {k: (ak.Array([v[i] if i != 2 else [] for i in range(5)]) if k.startswith("part_") else v)
               for k, v in jets.items()}  # fmt: skip
    assert counts[2] > 0
    scores = tagger.predict(emptied)
    assert (
        scores.shape == (5, 2)
        and np.isnan(scores[2]).all()
        and np.isfinite(np.delete(scores, 2, axis=0)).all()
    )
    assert tagger.last_skipped and sum(tagger.last_skipped.values()) == 1


def test_missing_inputs_are_named_in_one_sentence(tagger, toy_root_files):
    arrays = uproot.open(toy_root_files["test"])["tree"].arrays()
    lacking = arrays[[f for f in arrays.fields if f not in ("part_charge", "part_isPhoton")]]
    with pytest.raises(DataError, match=r"lack the field\(s\) part_charge, part_isPhoton") as err:
        tagger.predict(lacking)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="cannot score a int"):
        tagger.predict(3)
    renamed = ak.zip({("PF_q" if f == "part_charge" else f): arrays[f] for f in arrays.fields}, depth_limit=1)
    np.testing.assert_allclose(
        tagger.predict(renamed, branches={"part_charge": "PF_q"}), tagger.predict(arrays), atol=0
    )


def test_load_says_what_it_needs(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        jettag.load(tmp_path / "nothing")
    with pytest.raises(ConfigError, match=r"without checkpoints/best\.ckpt"):
        jettag.load(tmp_path)


def test_a_pickled_tagger_scores_the_same(tagger, toy_root_files):
    arrays = uproot.open(toy_root_files["test"])["tree"].arrays()
    copy = pickle.loads(pickle.dumps(tagger))
    np.testing.assert_array_equal(copy.predict(arrays), tagger.predict(arrays))


def test_dask_awkward_map_partitions(tagger, toy_root_files, cli_scores):
    dak = pytest.importorskip("dask_awkward")
    arrays = uproot.open(toy_root_files["test"])["tree"].arrays()
    lazy = dak.from_awkward(arrays, npartitions=3)
    scores = dak.map_partitions(tagger, lazy).compute(scheduler="processes", num_workers=2)
    assert scores.fields == ["score_label_QCD", "score_label_Tbqq"]
    np.testing.assert_allclose(ak.to_numpy(scores["score_label_Tbqq"]), cli_scores[:, 1], atol=1e-6)
    # dask reads only the branches the tagger needs
    columns = dak.report_necessary_columns(dak.map_partitions(tagger, lazy))
    needed = set(next(iter(columns.values())))
    assert set(tagger.branches) <= needed <= {*tagger.branches, "jet_pt", "jet_eta", "jet_phi", "jet_energy"}


def test_coffea_ml_tools_wrapper(run_dir, toy_root_files, cli_scores):
    pytest.importorskip("coffea")
    dak = pytest.importorskip("dask_awkward")
    from jettag.coffea import TaggerWrapper

    wrapper = TaggerWrapper(str(run_dir))
    arrays = uproot.open(toy_root_files["test"])["tree"].arrays()
    np.testing.assert_allclose(ak.to_numpy(wrapper(arrays)), cli_scores, atol=1e-6)
    shipped = pickle.loads(pickle.dumps(wrapper))  # as coffea sends it to a worker: the model left behind
    lazy = shipped(dak.from_awkward(arrays, npartitions=2))
    np.testing.assert_allclose(ak.to_numpy(lazy.compute()), cli_scores, atol=1e-6)
    small = TaggerWrapper(str(run_dir), width=5)
    with pytest.raises(DataError, match="more than width=5"):
        small(arrays)


def test_a_coffea_processor_scores_its_events(run_dir, toy_root_files, cli_scores, tmp_path):
    """The analysis pattern: a coffea processor scoring fat jets read by coffea's own reader."""
    pytest.importorskip("coffea")
    from coffea import processor
    from coffea.nanoevents import BaseSchema, NanoEventsFactory

    from jettag.coffea import TaggerWrapper

    class Scores(processor.ProcessorABC):
        def __init__(self, tagger):
            self.tagger = tagger

        def process(self, events):
            scores = self.tagger(events)
            return {"top_score": scores[:, 1]}

        def postprocess(self, accumulator):
            return accumulator

    events = NanoEventsFactory.from_root(
        {toy_root_files["test"]: "tree"}, schemaclass=BaseSchema, mode="eager"
    ).events()
    out = Scores(TaggerWrapper(str(run_dir))).process(events)
    np.testing.assert_allclose(ak.to_numpy(out["top_score"]), cli_scores[:, 1], atol=1e-6)


def test_jets_written_by_hand_score_like_their_file(tagger, tmp_path):
    jets = toy_jets(40, seed=4)
    path = write_root(tmp_path / "mine.root", jets)
    np.testing.assert_allclose(tagger.predict(jets), tagger.predict(path), atol=1e-6)
