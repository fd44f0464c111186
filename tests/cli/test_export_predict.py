"""jettag-export and jettag-predict on tiny runs trained with jettag-train on the toy files.

ONNX Runtime must reproduce the PyTorch eval-mode scores on real (toy) jets for batch sizes and
particle counts unlike those of the export; jettag-predict must reproduce the evaluation's
predictions.root jet by jet (the one jettag-train writes for its best checkpoint: the same code as
jettag-eval's, which test_train_eval.py checks against it), need no labels, keep one row per input
jet and give the same result whatever the chunk size.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import torch
import uproot
from helpers import run_cli, toy_jets, write_root
from omegaconf import OmegaConf

from jettag.data import read_jets
from jettag.data.dataset import JetDataset
from jettag.data.jets import JetBuilder
from jettag.errors import DataError
from jettag.inference import load_trained, predict_files

FAST = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.accelerator=cpu",
        "trainer.precision=32-true", "data.batch_size=32", "features.max_particles=40"]  # fmt: skip
# Tiny versions of a ParT and of a baseline whose export has a data-dependent size (k nearest
# neighbours), as model configs in a directory added to jettag's (`--config-dir`).
MODELS = {
    "tiny_part": {"defaults": ["part_small", "_self_"], "embed_dims": [16, 16], "pair_embed_dims": [8],
                  "num_heads": 2, "num_layers": 1},
    "tiny_particlenet": {"defaults": ["particlenet", "_self_"], "conv_params": [[4, [8, 8]], [4, [16]]],
                         "fc_params": [[16, 0.1]]},
}  # fmt: skip
CLASSES = ["label_QCD", "label_Tbqq"]


@pytest.fixture(scope="module")
def runs(toy_root_files, tmp_path_factory):
    """Run directory of each tiny model: one `jettag-train -m` over both, then one `jettag-export -m`."""
    base = tmp_path_factory.mktemp("export_runs")
    (base / "configs" / "model").mkdir(parents=True)
    for name, config in MODELS.items():
        OmegaConf.save(config, base / "configs" / "model" / f"{name}.yaml")
    files = [f"data.{split}_files=[{path}]" for split, path in toy_root_files.items()]
    result = run_cli("jettag-train", "-m", "--config-dir", str(base / "configs"), f"model={','.join(MODELS)}",
                     *files, *FAST, f"hydra.sweep.dir={base}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {name: base / str(i) for i, name in enumerate(MODELS)}  # the sweep's job numbers
    for name, run_dir in runs.items():
        assert f"model={name}" in OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")
    result = run_cli("jettag-export", "-m", f"run_dir={','.join(map(str, runs.values()))}",
                     f"hydra.sweep.dir={base / 'export'}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("ONNX Runtime matches PyTorch") == len(MODELS)
    return runs


def padded(dataset: JetDataset, index: np.ndarray, extra: int) -> dict[str, np.ndarray]:
    """A batch padded to its longest jet plus `extra` empty slots, as the ONNX model takes it."""
    batch = dataset[index]
    pad = torch.nn.functional.pad
    return {
        "x": pad(batch.x, (0, 0, 0, extra)).numpy(),
        "v": pad(batch.v, (0, 0, 0, extra)).numpy(),
        "mask": pad(batch.mask, (0, extra)).float().numpy(),
    }


@pytest.mark.parametrize("model", list(MODELS))
def test_onnx_reproduces_pytorch(runs, toy_root_files, model):
    import onnxruntime as ort

    run_dir = runs[model]
    onnx_path = run_dir / "model.onnx"
    info = json.loads(onnx_path.with_suffix(".json").read_text())
    trained = load_trained(run_dir / "checkpoints" / "best.ckpt")
    assert info["class_names"] == CLASSES and info["model"] == type(trained.model).__name__
    assert [f["name"] for f in info["feature_set"]["features"]] == trained.features.names
    assert info["feature_set"]["max_particles"] == 40
    assert info["feature_set"]["features"][0] | {"definition": ""} == {
        "name": "part_pt_log", "definition": "", "center": 1.7, "scale": 0.7, "min": -5.0, "max": 5.0,
        "transform": "min(max((x - center) * scale, min), max)"}  # fmt: skip

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert json.loads(session.get_modelmeta().custom_metadata_map["jettag"]) == info
    inputs = {i.name: (i.type, i.shape) for i in session.get_inputs()}
    assert inputs == {
        "x": ("tensor(float)", ["batch", "particles", trained.features.num_features]),
        "v": ("tensor(float)", ["batch", "particles", 4]),
        "mask": ("tensor(float)", ["batch", "particles"]),
    }
    assert [(o.name, o.shape) for o in session.get_outputs()] == [("scores", ["batch", 2])]

    jets, _ = read_jets(
        [toy_root_files["test"]], JetBuilder(trained.features, None), "tree", 10**6, "t", False
    )
    dataset = JetDataset(jets)
    small = np.argsort(dataset.counts, kind="stable")  # fewest particles first
    picks = [(small[:1], 0), (small[1:2], 9), (small[2:7], 0), (np.random.default_rng(1).permutation(300)[:64], 3),
             (np.arange(len(dataset)), 0)]  # fmt: skip
    worst, shapes = 0.0, set()
    for index, extra in picks:
        batch = padded(dataset, index, extra)
        with torch.inference_mode():
            expected = torch.softmax(
                trained.model(*(torch.from_numpy(batch[k]) for k in ("x", "v", "mask"))), -1
            )
        (scores,) = session.run(["scores"], batch)
        worst = max(worst, float(np.abs(scores - expected.numpy()).max()))
        shapes.add(batch["x"].shape[:2])
    assert 3 not in {b for b, _ in shapes} and len({n for _, n in shapes}) >= 4  # the export traced (3, 23)
    assert worst < 1e-4, worst
    print(f"{model}: max |ONNX Runtime - PyTorch| = {worst:.2e}")


def run_predict(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """jettag-predict in this process (a subprocess costs seconds): exit status and stderr."""
    from jettag.cli.predict import main

    assert (Path(sys.executable).parent / "jettag-predict").is_file()  # the console script is installed
    monkeypatch.setattr(sys, "argv", ["jettag-predict", *args])
    try:
        main()
        status = 0
    except SystemExit as exit_info:
        status = exit_info.code
    return status, capsys.readouterr().err


def test_predict_reproduces_eval(runs, toy_root_files, tmp_path, monkeypatch, capsys):
    output = tmp_path / "scores.root"
    status, stderr = run_predict(monkeypatch, capsys, f"run_dir={runs['tiny_part']}",
                                 f"files=[{toy_root_files['test']}]", f"output={output}",
                                 "data.observers=[jet_pt,jet_mass]", "progress=false")  # fmt: skip
    assert status == 0, stderr[-3000:]
    assert "scored 300 of 300 jets" in stderr
    predicted = uproot.open(output)["Events"].arrays(library="np")
    evaluated = uproot.open(runs["tiny_part"] / "predictions.root")["Events"].arrays(library="np")
    assert set(predicted) == {*(f"score_{c}" for c in CLASSES), "jet_pt", "jet_mass", "entry"}
    np.testing.assert_array_equal(predicted["entry"], np.arange(300))
    np.testing.assert_array_equal(predicted["jet_pt"], evaluated["jet_pt"])  # same jets, same order
    for name in CLASSES:
        np.testing.assert_allclose(predicted[f"score_{name}"], evaluated[f"score_{name}"], rtol=0, atol=1e-5)


def test_predict_without_labels_streams_and_keeps_rows(runs, tmp_path):
    # no label branches, and no jet_nparticles branch: that observer is then derived from the particles
    branches = {
        k: v for k, v in toy_jets(25, seed=7).items() if not k.startswith("label_") and k != "jet_nparticles"
    }
    counts = ak.num(branches["part_px"]).to_numpy()
    counts[[3, 17]] = 0  # two jets without particles
    for name in [k for k in branches if k.startswith("part_")]:
        flat = ak.to_numpy(ak.flatten(branches[name]))
        keep = np.repeat(np.isin(np.arange(25), [3, 17], invert=True), ak.num(branches[name]).to_numpy())
        branches[name] = ak.unflatten(flat[keep], counts)
    unlabelled = write_root(tmp_path / "unlabelled.root", branches, treename="Events")
    trained = load_trained(runs["tiny_part"] / "checkpoints" / "best.ckpt")
    results = {}
    for chunk_size in (4, 10**6):
        output = tmp_path / f"chunks{chunk_size}.root"
        summary = predict_files(trained, [unlabelled, unlabelled], output, "Events", ["jet_pt", "jet_nparticles"],
                                chunk_size=chunk_size, batch_size=3, progress=False)  # fmt: skip
        assert (summary.jets, summary.scored, dict(summary.skipped)) == (50, 46, {"no_particles": 4})
        results[chunk_size] = uproot.open(output)["Events"].arrays(library="np")
    streamed, whole = results[4], results[10**6]
    assert (
        set(streamed)
        == set(whole)
        == {"score_label_QCD", "score_label_Tbqq", "jet_pt", "jet_nparticles", "entry"}
    )
    for name in whole:  # scores: same jets, batched with other jets (other padding): float rounding only
        np.testing.assert_allclose(streamed[name], whole[name], rtol=0, atol=1e-6 if "score" in name else 0)
    # one row per jet, the files in order; observers read from the file are there for empty jets too
    np.testing.assert_array_equal(whole["entry"], np.tile(np.arange(25), 2))
    np.testing.assert_array_equal(whole["jet_pt"], np.tile(branches["jet_pt"], 2))
    empty = np.tile(counts == 0, 2)
    assert np.isnan(whole["score_label_QCD"][empty]).all() and np.isnan(whole["jet_nparticles"][empty]).all()
    np.testing.assert_array_equal(whole["jet_nparticles"][~empty], np.tile(counts, 2)[~empty])
    scores = np.stack([whole["score_label_QCD"], whole["score_label_Tbqq"]], axis=1)[~empty]
    np.testing.assert_allclose(scores.sum(axis=1), 1, atol=1e-6)


def test_predict_bad_input_is_one_sentence(runs, toy_root_files, tmp_path, monkeypatch, capsys):
    status, stderr = run_predict(
        monkeypatch, capsys, f"run_dir={runs['tiny_particlenet']}", f"files=[{tmp_path}/no.root]"
    )
    assert status == 2
    line = stderr.strip().splitlines()[-1]
    assert (
        line == f"jettag-predict: error: files: the file '{tmp_path}/no.root' does not exist; check the path."
    )

    trained = load_trained(runs["tiny_particlenet"] / "checkpoints" / "best.ckpt")
    test_file = toy_root_files["test"]
    with pytest.raises(DataError, match=r"has no tree 'Events' .* set data\.treename"):
        predict_files(trained, [test_file], tmp_path / "p.root", "Events", progress=False)
    with pytest.raises(DataError, match=r"no branch 'jet_tau9' needed for data\.observers"):
        predict_files(trained, [test_file], tmp_path / "p.root", "tree", ["jet_tau9"], progress=False)
    no_charge = {k: v for k, v in toy_jets(5, seed=3).items() if k != "part_charge"}
    path = write_root(tmp_path / "nocharge.root", no_charge)
    with pytest.raises(DataError, match="has no branch part_charge for feature set 'kinpid'"):
        predict_files(trained, [path], tmp_path / "p.root", "tree", progress=False)
