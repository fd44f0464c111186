"""scripts/make_study_data.py: the pretraining set (100k jets of the ten classes) and the top/QCD study
sets as one command whose second run reuses every file made with the same arguments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import load_script, toy_jets, write_root


@pytest.fixture(scope="module")
def script():
    return load_script("make_study_data")


def test_the_default_plan_is_100k_jets_of_ten_classes_and_a_20k_test_set(script):
    files = dict(script.plan(script.parse_args([])))
    pretrain = {k: v for k, v in files.items() if k.startswith("pretrain/multi_0")}
    per_file = [int(v[v.index("-n") + 1]) * 10 for v in pretrain.values()]  # ten classes each
    assert sum(per_file) == 100_000 and all(v[:2] == ["--classes", "all"] for v in pretrain.values())
    test = [int(v[v.index("-n") + 1]) for k, v in files.items() if k.startswith("topqcd/test_")]
    assert sum(test) >= 10_000  # QCD jets (as many top): >= 20,000 test jets
    seeds = [v[v.index("--seed") + 1] for v in files.values()]
    assert len(seeds) == len(set(seeds))  # no jet in two sets


def test_a_second_run_reuses_what_was_made_with_the_same_arguments(script, tmp_path, monkeypatch):
    import jettag.generate.cli as cli

    made = []

    def fake_generate(argv):
        made.append(argv)
        Path(argv[argv.index("-o") + 1]).write_text("jets")
        return []

    monkeypatch.setattr(cli, "generate", fake_generate)
    monkeypatch.setattr(script, "content_hash", lambda path: "hash of " + path.read_text())
    args = ["--out", str(tmp_path), "--only", "topqcd", "--pool-parts", "1", "--test-parts", "1",
            "--pool-per-class", "3", "--val-per-class", "2", "--test-per-class", "2"]  # fmt: skip
    script.main(args)
    assert len(made) == 3 and (tmp_path / "topqcd" / "pool_0.root").read_text() == "jets"
    assert not list(tmp_path.rglob("*.partial.root"))
    assert json.loads((tmp_path / "topqcd" / "val.json").read_text())["arguments"] == [
        "-n",
        "2",
        "--seed",
        "2100",
    ]
    assert json.loads((tmp_path / "topqcd" / "val.json").read_text())["content_sha256"] == "hash of jets"
    script.main(args)
    assert len(made) == 3  # all reused
    script.main([*args[:-1], "4"])  # another test size: only the test file is made again
    assert len(made) == 4 and "test_0.partial.root" in made[-1][made[-1].index("-o") + 1]


def test_the_content_hash_follows_the_jets_not_the_file(script, tmp_path):
    """Same jets in two files written differently: one hash; one value changed: another."""
    import hashlib

    import awkward as ak
    import numpy as np
    import uproot

    jets = toy_jets(20, seed=3)
    write_root(tmp_path / "a.root", jets)
    particles = ak.zip({k[len("part_") :]: v for k, v in jets.items() if k.startswith("part_")})
    with uproot.recreate(tmp_path / "b.root", compression=uproot.LZMA(6)) as file:  # other compression
        file.mktree(
            "tree", {**{k: v for k, v in jets.items() if not k.startswith("part_")}, "part": particles}
        )
    assert script.content_hash(tmp_path / "a.root") == script.content_hash(tmp_path / "b.root")
    # worked independently: sha256 over the sorted branches, counts then values
    digest = hashlib.sha256()
    tree = uproot.open(tmp_path / "a.root")["tree"]
    for name in sorted(tree.keys()):  # the jets' branches and the particle counter
        values = tree[name].array(library="ak")
        digest.update(name.encode())
        if values.ndim > 1:
            digest.update(np.asarray(ak.num(values), dtype=np.int64).tobytes())
        digest.update(np.asarray(ak.flatten(values, axis=None)).tobytes())
    assert script.content_hash(tmp_path / "a.root") == digest.hexdigest()
    changed = dict(jets)
    changed["jet_pt"] = np.asarray(jets["jet_pt"]).copy()
    changed["jet_pt"][7] += 1.0
    write_root(tmp_path / "c.root", changed)
    assert script.content_hash(tmp_path / "c.root") != script.content_hash(tmp_path / "a.root")
