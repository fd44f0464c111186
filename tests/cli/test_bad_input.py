"""Bad input given on the command line ends in one sentence naming the file / branch (exit 2, no
traceback), or in a documented handling that is counted and reported."""

from __future__ import annotations

import json

import awkward as ak
import numpy as np
import pytest
import uproot
from helpers import run_cli, toy_jets, write_root


def modified_jets(n, seed, **changes):
    branches = toy_jets(n, seed=seed)
    for name, change in changes.items():
        branches[name] = change(branches[name])
    return branches


def set_particle(array, jet, particle, value):
    flat = ak.to_numpy(ak.flatten(array)).copy()
    counts = ak.to_numpy(ak.num(array))
    start = np.cumsum(counts)[jet - 1] if jet else 0
    flat[start + particle] = value
    return ak.unflatten(flat, counts)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, toy_root_files):
    base = tmp_path_factory.mktemp("bad")
    files = {}
    (base / "garbage.root").write_bytes(b"this is not a ROOT file at all")
    files["garbage"] = str(base / "garbage.root")
    (base / "zero.root").write_bytes(b"")
    files["zero_bytes"] = str(base / "zero.root")
    good = open(toy_root_files["val"], "rb").read()
    (base / "truncated.root").write_bytes(good[: len(good) // 2])
    files["truncated"] = str(base / "truncated.root")
    files["other_tree"] = write_root(base / "events.root", toy_jets(20, seed=1), treename="Events")
    with uproot.recreate(base / "empty.root") as f:
        f.mktree("tree", {"jet_pt": np.float32, "label_QCD": np.bool_})
    files["empty"] = str(base / "empty.root")
    both = modified_jets(30, 2, label_QCD=lambda a: np.ones_like(a))  # every jet labelled QCD too
    files["not_one_hot"] = write_root(base / "notonehot.root", both)
    files["nan"] = write_root(
        base / "nan.root", modified_jets(30, 3, part_px=lambda a: set_particle(a, 7, 0, np.nan))
    )
    no_d0 = {k: v for k, v in toy_jets(30, seed=4).items() if k != "part_d0val"}
    files["no_d0"] = write_root(base / "nod0.root", no_d0)
    files["base"] = str(base)
    return files


def fails_with_one_sentence(result, *fragments):
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("jettag-train: error: ")
    for fragment in fragments:
        assert fragment in line, line
    return line


def train(toy_root_files, tmp_path, *overrides):
    files = dict(toy_root_files)
    args = [f"data.{s}_files=[{p}]" for s, p in files.items()]
    return run_cli("jettag-train", *args, "trainer.max_epochs=1", "trainer.limit_train_batches=1",
                   "trainer.accelerator=cpu", f"hydra.run.dir={tmp_path / 'run'}", *overrides)  # fmt: skip


@pytest.mark.parametrize(
    ("case", "override", "fragments"),
    [
        (
            "missing file",
            "data.train_files=[/nonexistent/jets.root]",
            ["/nonexistent/jets.root", "does not exist"],
        ),
        (
            "no glob match",
            "data.train_files=[/nonexistent/*.root]",
            ["no file matches", "/nonexistent/*.root"],
        ),
        ("empty list", "data.train_files=[]", ["data.train_files is empty"]),
        ("garbage", "data.train_files=[{garbage}]", ["garbage.root", "neither a ROOT nor a Parquet"]),
        ("zero bytes", "data.train_files=[{zero_bytes}]", ["zero.root", "empty (0 bytes)"]),
        ("truncated", "data.train_files=[{truncated}]", ["truncated.root", "cannot read"]),
        (
            "missing tree",
            "data.train_files=[{other_tree}]",
            ["events.root", "no tree 'tree'", "Events", "data.treename"],
        ),
        ("no jets", "data.train_files=[{empty}]", ["empty.root", "hold no jets"]),
        ("not one-hot", "data.train_files=[{not_one_hot}]", ["notonehot.root", "not one-hot", "entry 0"]),
        ("NaN input", "data.train_files=[{nan}]", ["nan.root", "part_px", "NaN or infinite", "entry 7"]),
        ("missing branch", "data.train_files=[{no_d0}]", ["nod0.root", "part_d0val", "full"]),
        ("missing label branch", "data.labels=[label_QCD,label_Hbb,label_Xyz]", ["label_Xyz", "data.labels"]),
        ("missing observer", "data.observers=[jet_foo]", ["jet_foo", "data.observers"]),
        ("one label", "data.labels=[label_QCD]", ["data.labels must list at least two"]),
        ("unknown model", "model=nope", ["model=nope", "no model 'nope'", "part_small"]),
        ("negative lr", "task.optimizer.lr=-1", ["task.optimizer.lr=-1", "must not be negative"]),
        ("zero width", "model.embed_dims=[0,0]", ["model.embed_dims", "at least 1"]),
        ("eval batch", "data.eval_batch_size=-1", ["data.eval_batch_size", "at least 1"]),
        ("ckpt directory", "ckpt_path={base}", ["ckpt_path", "is a directory"]),
        (
            "ckpt not a checkpoint",
            "ckpt_path={garbage}",
            ["ckpt_path", "garbage.root", "not a readable PyTorch"],
        ),
    ],
)
def test_bad_input_ends_in_one_sentence(case, override, fragments, bad_files, toy_root_files, tmp_path):
    extra = ["features=full"] if case == "missing branch" else []
    result = train(toy_root_files, tmp_path, override.format(**bad_files), *extra)
    fails_with_one_sentence(result, *fragments)


def test_unknown_experiment_is_one_sentence(toy_root_files, tmp_path):
    result = train(toy_root_files, tmp_path, "experiment=nope")
    fails_with_one_sentence(result, "experiment=nope", "no experiment 'nope'", "top_part")


def test_empty_and_nonfinite_jets_are_skipped_counted_and_reported(toy_root_files, tmp_path):
    # jet 4 has no particles, jet 7 a NaN: with drop_nonfinite_jets both are skipped and counted
    branches = toy_jets(200, seed=6)
    counts = ak.to_numpy(ak.num(branches["part_px"]))
    keep = np.ones(counts.sum(), bool)
    keep[np.cumsum(counts)[3] : np.cumsum(counts)[4]] = False
    for name in [k for k in branches if k.startswith("part_")]:
        flat = ak.to_numpy(ak.flatten(branches[name]))[keep]
        branches[name] = ak.unflatten(flat, np.where(np.arange(200) == 4, 0, counts))
    branches["part_px"] = set_particle(branches["part_px"], 7, 0, np.inf)
    path = write_root(tmp_path / "holes.root", branches)

    result = train(toy_root_files, tmp_path, f"data.train_files=[{path}]", "data.drop_nonfinite_jets=true")
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((tmp_path / "run" / "metrics.json").read_text())["info"]
    assert info["jets"]["train"]["skipped"] == {"no_particles": 1, "nonfinite_inputs": 1}
    assert info["jets"]["train"]["jets"] == 198
    assert "skipped 1 jets (no particles)" in result.stdout + result.stderr  # the log

    # without the options, both are errors naming the entry
    result = train(toy_root_files, tmp_path, f"data.train_files=[{path}]", "data.skip_empty_jets=false")
    fails_with_one_sentence(result, "holes.root", "entry 7", "drop_nonfinite_jets")
    result = train(toy_root_files, tmp_path, f"data.train_files=[{path}]", "data.skip_empty_jets=false",
                   "data.drop_nonfinite_jets=true")  # fmt: skip
    fails_with_one_sentence(result, "holes.root", "entry 4", "no particles", "skip_empty_jets")
