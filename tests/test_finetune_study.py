"""scripts/finetune_study.py: every cell planned as the issue asks (budgets, seeds, the same steps and
early stopping for every method, the from-scratch lr chosen on validation, probes), resumable cell by
cell, and a table whose means and spreads are those of the results file. `jettag-train` is replaced by a
stand-in that writes the metrics a run would; the real runs are what the study itself measures."""

from __future__ import annotations

import csv
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import uproot
from helpers import load_script, toy_jets, write_root


@pytest.fixture(scope="module")
def study_module():
    return load_script("finetune_study")


def pretraining_checkpoint() -> dict:
    """What a pretraining run's best.ckpt holds, in small: the model, a decoder, optimizer state."""
    return {
        "jettag": {"config": {"model": {"_target_": "x"}}},
        "state_dict": {
            "model.embed.weight": torch.ones(2),
            "model.head.weight": torch.ones(1),
            "decoder.layer.weight": torch.ones(3),
        },
        "optimizer_states": [{"state": {0: torch.zeros(2)}}],
        "lr_schedulers": [{}],
        "callbacks": {"ModelCheckpoint{'monitor': 'val/loss'}": {"best_model_score": torch.tensor(0.25)}},
        "epoch": 4,
    }


def fake_runs(monkeypatch, module, calls: list, fail_after: int | None = None):
    """Replace jettag-train: record the overrides, write metrics.json (validation AUC depends on the lr)."""

    def train(self, overrides, run_dir):
        if fail_after is not None and len(calls) >= fail_after:
            raise KeyboardInterrupt  # the sitting ends
        calls.append(list(overrides))
        run_dir.mkdir(parents=True, exist_ok=True)
        values = dict(o.split("=", 1) for o in overrides if "=" in o)
        if values.get("experiment", "").startswith("pretrain_"):
            (run_dir / "checkpoints").mkdir(exist_ok=True)
            torch.save(pretraining_checkpoint(), run_dir / "checkpoints" / "best.ckpt")
            return 1.0
        lr = float(values.get("task.optimizer.lr", 1e-3))
        seed = int(values["seed"])
        val_auc = 0.9 - abs(np.log10(lr) + 3)  # best at lr 1e-3
        metrics = {"auc": 0.95 + 0.001 * seed, "rej50": 20.0 + seed, "rej30": 60.0 + seed,
                   "info": {"best_val_auc": val_auc, "optimizer_steps": int(values["trainer.max_steps"])}}  # fmt: skip
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        return 2.0

    monkeypatch.setattr(module.Study, "train", train)
    monkeypatch.setattr(module, "plot", lambda table, out: None)  # drawn once per cell; tested below
    monkeypatch.setattr(
        module.Study, "subset", lambda self, n, seed: Path(f"/pool/labelled_{n}_seed{seed}.root")
    )


def run_study(module, tmp_path, extra=()):
    args = module.parse_args(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
                              "--budgets", "1000", "5000", "--seeds", "5", "3", "--steps", "400", "800",
                              "--probe-seeds", "2", "1", *extra])  # fmt: skip
    module.Study(args).run()
    return module.read(tmp_path / "out" / "results.csv")


def test_every_cell_is_planned_with_the_same_steps_and_early_stopping(study_module, tmp_path, monkeypatch):
    calls = []
    fake_runs(monkeypatch, study_module, calls)
    rows = run_study(study_module, tmp_path)
    pretrain = [c for c in calls if c[0].startswith("experiment=pretrain_")]
    assert sorted(c[0] for c in pretrain) == ["experiment=pretrain_cls_mpm", "experiment=pretrain_contrastive",
                                              "experiment=pretrain_mpm", "experiment=pretrain_supervised"]  # fmt: skip
    cells = {(r["method"], int(r["budget"]), int(r["seed"])) for r in rows}
    finetuned = ["supervised", "mpm", "contrastive", "cls_mpm"]
    for budget, seeds, probes in ((1000, 5, 2), (5000, 3, 1)):
        for method in ["scratch", *finetuned]:
            assert {s for m, b, s in cells if m == method and b == budget} == set(range(seeds))
        for probe in ["random", *finetuned]:
            assert {s for m, b, s in cells if m == f"probe_{probe}" and b == budget} == set(range(probes))
        # four learning rates tried from scratch at seed 0
        assert {float(r["lr"]) for r in rows if r["method"] == "scratch_lr" and int(r["budget"]) == budget} == {
            1e-4, 3e-4, 1e-3, 3e-3}  # fmt: skip
    assert all(r["val_auc"] and r["optimizer_steps"] for r in rows)
    # the lr of the best validation AUC is the from-scratch lr of every seed
    assert {float(r["lr"]) for r in rows if r["method"] == "scratch"} == {1e-3}
    runs = [c for c in calls if not c[0].startswith("experiment=pretrain_")]
    for call in runs:
        values = dict(o.split("=", 1) for o in call)
        budget = int(values["data.train_files"].split("_")[1])
        steps = {1000: 400, 5000: 800}[budget]
        assert values["trainer.max_steps"] == str(steps) and values["trainer.val_check_interval"] == str(
            steps // 20
        )
        assert values["experiment"] in ("study_scratch", "study_finetune")
    probes = [c for c in runs if "task.freeze_backbone=true" in c]
    assert len(probes) == 5 * (2 + 1) and any("task.backbone=random" in c for c in probes)


def test_a_rerun_skips_the_cells_already_there(study_module, tmp_path, monkeypatch):
    calls = []
    fake_runs(monkeypatch, study_module, calls, fail_after=12)
    with pytest.raises(KeyboardInterrupt):
        run_study(study_module, tmp_path)
    first = study_module.read(tmp_path / "out" / "results.csv")
    assert 0 < len(first) < 12
    calls_after = []
    fake_runs(monkeypatch, study_module, calls_after)
    rows = run_study(study_module, tmp_path)
    # nothing twice, and the pretraining runs whose checkpoint exists are not run again
    keys = [(r["method"], r["budget"], r["seed"], r["lr"]) for r in rows]
    assert len(keys) == len(set(keys))
    assert not [c for c in calls_after if c[0].startswith("experiment=pretrain_")]
    assert (
        len(calls) + len(calls_after) == len(rows) - 2 + 4
    )  # seed 0 of scratch reuses its lr run; 4 pretrainings


def test_table_means_and_spreads(study_module, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    rows = [{"method": "scratch", "budget": 1000, "seed": s, "lr": 1e-3, "steps": 400, "optimizer_steps": 400,
             "val_auc": 0.9, "auc": a, "rej50": r, "rej30": 3 * r, "seconds": 10}
            for s, (a, r) in enumerate([(0.90, 10.0), (0.92, 14.0), (0.94, 18.0)])]  # fmt: skip
    rows += [{**rows[0], "method": "contrastive", "seed": 0, "rej50": 24.0, "auc": 0.95}]
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    table = study_module.report(out)
    scratch = next(r for r in table if r["method"] == "scratch")
    assert scratch["rej50_mean"] == pytest.approx(14.0) and scratch["rej50_std"] == pytest.approx(4.0)
    assert scratch["auc_mean"] == pytest.approx(0.92) and scratch["auc_std"] == pytest.approx(0.02)
    text = (out / "table.md").read_text()
    assert "14.0 +- 4.0" in text and "| 1.71 |" in text  # 24 / 14
    assert (out / "rej50_vs_budget.png").is_file()


def test_the_table_goes_between_the_readme_markers(study_module, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- study-table -->\nold table\n<!-- /study-table -->\nrest\n")
    study_module.put_in_readme(readme, "| new | table |\n")
    assert readme.read_text() == "intro\n<!-- study-table -->\n| new | table |\n<!-- /study-table -->\nrest\n"
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="study-table"):
        study_module.put_in_readme(readme, "x")


def test_backbones_are_kept_slim_with_the_results_and_reused_in_a_new_sitting(
    study_module, tmp_path, monkeypatch
):
    calls = []
    fake_runs(monkeypatch, study_module, calls)
    run_study(
        study_module, tmp_path, ["--methods", "mpm", "probe_contrastive", "--pretrain-time", "00:00:20:00"]
    )
    pretrain = [c for c in calls if c[0].startswith("experiment=pretrain_")]
    assert sorted(c[0] for c in pretrain) == ["experiment=pretrain_contrastive", "experiment=pretrain_mpm"]
    assert all("trainer.max_time=00:00:20:00" in c for c in pretrain)
    kept = tmp_path / "out" / "backbones" / "mpm.ckpt"
    content = torch.load(kept, weights_only=False)
    assert sorted(content["state_dict"]) == ["model.embed.weight", "model.head.weight"]
    assert "optimizer_states" not in content and content["jettag"] == pretraining_checkpoint()["jettag"]
    logged = study_module.read(tmp_path / "out" / "pretraining.csv")
    assert [float(r["best_val"]) for r in logged] == [0.25, 0.25]
    assert all(f"task.backbone={kept.resolve()}" in c for c in calls if "task.backbone" in " ".join(c)
               and "mpm" in str(c))  # fmt: skip
    # a new sitting: no run directories, only what was committed (results, backbones)
    import shutil

    shutil.rmtree(tmp_path / "data")
    (tmp_path / "out" / "results.csv").unlink()
    calls_after = []
    fake_runs(monkeypatch, study_module, calls_after)
    run_study(study_module, tmp_path, ["--methods", "mpm", "probe_contrastive"])
    assert not [c for c in calls_after if c[0].startswith("experiment=pretrain_")]
    assert any(f"task.backbone={(tmp_path / 'out' / 'backbones' / 'contrastive.ckpt').resolve()}" in c
               for c in calls_after)  # fmt: skip


ONE_BUDGET = ["--budgets", "1000", "--seeds", "1", "--steps", "400", "--probe-seeds", "1"]


def test_a_set_with_other_jets_than_the_results_stops_the_study(study_module, tmp_path, monkeypatch):
    calls = []
    fake_runs(monkeypatch, study_module, calls)
    topqcd = tmp_path / "data" / "topqcd"
    topqcd.mkdir(parents=True)
    for name in ("pool_0", "val", "test_0"):
        (topqcd / f"{name}.root").write_text("jets")
        (topqcd / f"{name}.json").write_text(json.dumps({"arguments": [], "content_sha256": f"{name}-hash"}))
    run_study(study_module, tmp_path, ["--methods", "scratch", *ONE_BUDGET])
    record = json.loads((tmp_path / "out" / "data.json").read_text())
    assert record == {"topqcd/pool_0.root": "pool_0-hash", "topqcd/test_0.root": "test_0-hash",
                      "topqcd/val.root": "val-hash"}  # fmt: skip
    (topqcd / "val.json").write_text(json.dumps({"arguments": [], "content_sha256": "other-hash"}))
    (tmp_path / "out" / "results.csv").unlink()
    with pytest.raises(SystemExit, match=r"val\.root holds other jets"):
        run_study(study_module, tmp_path, ["--methods", "scratch", *ONE_BUDGET])


def test_two_cells_at_a_time_plan_the_same_cells(study_module, tmp_path, monkeypatch):
    """--jobs 2 (the scratch candidates too) ends with the results of --jobs 1, each cell once."""
    results = {}
    for jobs in (1, 2):
        calls = []
        fake_runs(monkeypatch, study_module, calls)
        rows = run_study(study_module, tmp_path / f"jobs{jobs}", extra=["--jobs", str(jobs)])
        results[jobs] = sorted((r["method"], r["budget"], r["seed"], r["lr"], r["rej50"]) for r in rows)
        assert len(results[jobs]) == len(set(results[jobs]))
    assert results[1] == results[2]


def test_a_subset_asked_for_by_two_runs_at_once_is_written_once(study_module, tmp_path):
    """Cells side by side ask for the same labelled subset: every caller gets the whole subset (the
    first n jets of the seed's permutation of the pool, worked here with numpy)."""
    pool = [toy_jets(30, seed=1), toy_jets(25, seed=2)]
    (tmp_path / "data" / "topqcd").mkdir(parents=True)
    for i, jets in enumerate(pool):
        write_root(tmp_path / "data" / "topqcd" / f"pool_{i}.root", jets)
    study = study_module.Study(
        study_module.parse_args(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "out")])
    )
    barrier, paths, errors = threading.Barrier(4), [], []

    def ask():
        barrier.wait()
        try:
            paths.append(study.subset(40, 3))
        except Exception as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(paths)) == 1
    pt = np.concatenate([np.asarray(j["jet_pt"]) for j in pool])
    expected = pt[np.random.default_rng(3).permutation(len(pt))[:40]]
    written = uproot.open(paths[0])["tree"]["jet_pt"].array(library="np")
    np.testing.assert_allclose(written, expected, rtol=1e-6)
    assert not list(paths[0].parent.glob("*.partial.root"))
