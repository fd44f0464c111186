"""Config keys with one meaning each (issue 14).

- `configs/trainer/default.yaml` lists every argument of the installed `lightning.Trainer`, so any of
  them is `trainer.<name>=...`; `trainer.max_steps` stops a tiny run at that step.
- `train.yaml`'s own defaults are the no-argument run: it and every experiment compose to the same
  configuration as before issue 14, when the default run was `experiment: sample_part_small`
  (configs_before_issue14/ holds the files issue 14 rewrote, as they were; composed over today's other
  configs, so later changes to the data, feature or model configs do not matter here).
- jettag-eval and jettag-predict read the device, precision and batch size under the same keys as
  jettag-train (trainer.accelerator, trainer.devices, trainer.precision, data.eval_batch_size); the old
  spellings stop with one sentence naming the new key. Their data keys left at ??? take the run's
  value, and data.labels=null means unlabelled jets, which jettag-eval refuses.
"""

from __future__ import annotations

import inspect
import json
import shutil
import sys
from pathlib import Path

import lightning
import numpy as np
import pytest
import uproot
from helpers import run_cli
from hydra import compose, initialize_config_dir
from omegaconf import MISSING, OmegaConf

from jettag.cli import renamed_key_error
from jettag.paths import config_dir
from jettag.pipeline import with_run_data

BEFORE = Path(__file__).parent / "configs_before_issue14"
REWRITTEN = {"pretrain_mpm", "pretrain_supervised"}  # experiments rewritten on purpose after issue 14
# Trainer arguments that are jettag's groups, not trainer keys
FROM_GROUPS = {"callbacks", "logger"}
# jettag's own values (each explained in configs/trainer/default.yaml); the others are Lightning's defaults
JETTAG_CHOICES = {"devices": 1, "precision": "32-true", "max_epochs": 20, "limit_train_batches": 1.0,
                  "limit_val_batches": 1.0, "limit_test_batches": 1.0, "val_check_interval": 1.0,
                  "num_sanity_val_steps": 0, "log_every_n_steps": 10, "deterministic": False, "benchmark": False,
                  "use_distributed_sampler": False, "default_root_dir": "${paths.output_dir}"}  # fmt: skip
TINY = ["features.max_particles=16", "model.num_layers=1", "model.embed_dims=[16,16]", "model.pair_embed_dims=[8]",
        "trainer.accelerator=cpu", "data.batch_size=16", "data.eval_batch_size=20"]  # fmt: skip


def trainer_arguments() -> dict:
    """Lightning's Trainer arguments with their defaults, in order."""
    parameters = inspect.signature(lightning.Trainer.__init__).parameters
    return {name: p.default for name, p in parameters.items() if name != "self"}


def test_trainer_config_lists_every_lightning_trainer_argument():
    config = OmegaConf.to_container(OmegaConf.load(config_dir() / "trainer" / "default.yaml"))
    assert config.pop("_target_") == "lightning.pytorch.Trainer"
    arguments = trainer_arguments()
    # a new Lightning version with other arguments shows up here: list them in configs/trainer/default.yaml
    assert list(config) == [name for name in arguments if name not in FROM_GROUPS]
    assert {k: config[k] for k in JETTAG_CHOICES} == JETTAG_CHOICES
    assert {k: v for k, v in config.items() if k not in JETTAG_CHOICES} == {
        k: arguments[k] for k in config if k not in JETTAG_CHOICES
    }


def composed(directory: Path, cases: list[tuple[str, ...]]) -> dict:
    with initialize_config_dir(str(directory), version_base="1.3"):
        return {case: OmegaConf.to_container(compose("train", overrides=list(case))) for case in cases}


def test_train_defaults_are_the_no_argument_run_and_compose_as_before(tmp_path):
    defaults = OmegaConf.to_container(OmegaConf.load(config_dir() / "train.yaml"))["defaults"]
    assert {"experiment": None} in defaults
    before = tmp_path / "configs"
    shutil.copytree(config_dir(), before)
    shutil.copytree(BEFORE, before, dirs_exist_ok=True)
    # the pretraining experiments were rewritten since (MPMv2, the pretraining set): what they compose to
    # is checked in test_pretrain_finetune.py
    experiments = sorted(p.stem for p in (BEFORE / "experiment").glob("*.yaml") if p.stem not in REWRITTEN)
    cases = [(), *((f"experiment={name}",) for name in experiments), ("features=kin",), ("data=toplandscape",),
             ("model=particlenet", "trainer=gpu"), ("experiment=jetclass_part", "trainer=ddp")]  # fmt: skip
    old, new = composed(before, cases), composed(config_dir(), cases)
    lightning_defaults = trainer_arguments()
    for case in cases:  # issue 16: train.yaml's batches, 128 -> 32 and evaluation 256 (a peak under 1 GB)
        if old[case]["data"]["batch_size"] == 128:
            old[case]["data"]["batch_size"] = 32
        if new[case]["data"]["eval_batch_size"] == 256:
            old[case]["data"]["eval_batch_size"] = 256
    for case in cases:
        trainer = new[case]["trainer"]
        added = {key: trainer.pop(key) for key in list(trainer) if key not in old[case]["trainer"]}
        # the Trainer arguments listed since: at Lightning's defaults, as when they were not passed
        assert added == {key: lightning_defaults[key] for key in added}, case
        assert new[case] == old[case], case
    assert new[()]["features"]["max_particles"] == 64 and new[()]["data"]["batch_size"] == 32
    assert new[("experiment=top_part",)]["features"]["max_particles"] == 128


@pytest.fixture(scope="module")
def run(toy_root_files, tmp_path_factory):
    """A tiny run stopped by trainer.max_steps=5 (2 batches per epoch: in its third epoch)."""
    run_dir = tmp_path_factory.mktemp("config_keys") / "run"
    files = [f"data.{split}_files=[{path}]" for split, path in toy_root_files.items()]
    result = run_cli("jettag-train", *files, *TINY, "trainer.max_epochs=10", "trainer.limit_train_batches=2",
                     "trainer.limit_val_batches=1", "trainer.max_steps=5", f"hydra.run.dir={run_dir}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_any_trainer_argument_is_a_trainer_key(run):
    info = json.loads((run / "metrics.json").read_text())["info"]
    assert info["optimizer_steps"] == 5
    assert OmegaConf.load(run / ".hydra" / "config.yaml").trainer.max_steps == 5


def call(prog: str, monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """A jettag command in this process: exit status and stderr."""
    module = {"jettag-train": "train", "jettag-eval": "evaluate", "jettag-predict": "predict"}[prog]
    main = __import__(f"jettag.cli.{module}", fromlist=["main"]).main
    monkeypatch.setattr(sys, "argv", [prog, *args])
    try:
        main()
        status = 0
    except SystemExit as exit_info:
        status = exit_info.code
    return status, capsys.readouterr().err


@pytest.mark.parametrize(
    "prog, arg, answer",
    [
        ("jettag-eval", "accelerator=cpu", "accelerator=cpu is written trainer.accelerator=cpu"),
        ("jettag-eval", "precision=bf16-mixed", "precision=bf16-mixed is written trainer.precision=bf16-mixed"),
        ("jettag-eval", "data.batch_size=64", "data.batch_size is the training batch size; jettag-eval scores "
         "jets in batches of data.eval_batch_size, e.g. data.eval_batch_size=64."),
        ("jettag-predict", "device=cuda:1", "device=cuda:1 is written trainer.accelerator=gpu trainer.devices=[1]"),
        ("jettag-predict", "device=cpu", "device=cpu is written trainer.accelerator=cpu"),
        ("jettag-predict", "batch_size=4096", "batch_size=4096 is written data.eval_batch_size=4096"),
        ("jettag-train", "+accelerator=gpu", "+accelerator=gpu is written trainer.accelerator=gpu"),
    ],
)  # fmt: skip
def test_old_spellings_name_the_new_key(prog, arg, answer, monkeypatch, capsys, tmp_path):
    status, stderr = call(prog, monkeypatch, capsys, f"run_dir={tmp_path}", arg)
    assert status == 2
    assert stderr.strip().splitlines()[-1].startswith(f"{prog}: error: {answer}")
    # the new spellings pass
    new = ["-m", "trainer.accelerator=cpu", "trainer.devices=[1]", "trainer.precision=32-true"]
    assert renamed_key_error(prog, [*new, "data.eval_batch_size=8", f"hydra.run.dir={tmp_path}"]) is None


def test_eval_takes_the_trainer_settings_and_the_runs_data(run, monkeypatch, capsys, tmp_path):
    status, stderr = call("jettag-eval", monkeypatch, capsys, f"run_dir={run}", "trainer.accelerator=cpu",
                          "trainer.precision=32-true", "data.eval_batch_size=7", f"hydra.run.dir={tmp_path}")  # fmt: skip
    assert status == 0, stderr[-3000:]
    evaluated = json.loads((tmp_path / "metrics.json").read_text())
    trained = json.loads((run / "metrics.json").read_text())
    assert evaluated["auc"] == pytest.approx(trained["auc"], abs=1e-6)
    assert evaluated["info"]["test_files"] == trained["info"]["test_files"]  # the run's, not given here

    # one process only
    status, stderr = call("jettag-eval", monkeypatch, capsys, f"run_dir={run}", "trainer=ddp_cpu",
                          f"hydra.run.dir={tmp_path / 'ddp'}")  # fmt: skip
    assert status == 2 and "jettag-eval runs in one process" in stderr and "trainer.devices=1" in stderr


def test_eval_given_no_labels_says_it_needs_them(run, monkeypatch, capsys, tmp_path):
    status, stderr = call("jettag-eval", monkeypatch, capsys, f"run_dir={run}", "data.labels=null",
                          f"hydra.run.dir={tmp_path}")  # fmt: skip
    assert status == 2
    line = stderr.strip().splitlines()[-1]
    assert line.startswith(
        "jettag-eval: error: data.labels=null means unlabelled jets, but jettag-eval needs"
    )


def test_data_keys_left_unset_take_the_runs_values():
    given = OmegaConf.create(
        {"labels": "???", "treename": None, "observers": ["jet_pt"], "chunk_size": MISSING}
    )
    run_data = {"labels": ["label_QCD", "label_Tbqq"], "treename": "tree", "observers": [], "chunk_size": 10}
    assert with_run_data(run_data, given) == {
        "labels": ["label_QCD", "label_Tbqq"], "treename": None, "observers": ["jet_pt"], "chunk_size": 10}  # fmt: skip


def test_predict_takes_trainer_keys_and_the_runs_batch(run, toy_root_files, monkeypatch, capsys, tmp_path):
    import jettag.cli.predict

    seen = []
    real = jettag.cli.predict.predict_files

    def recording(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(jettag.cli.predict, "predict_files", recording)
    common = [f"run_dir={run}", f"files=[{toy_root_files['test']}]", "progress=false"]
    scores = {}
    cases = {"run": [], "given": ["data.eval_batch_size=7"], "bf16": ["trainer.precision=bf16-mixed"]}
    for name, extra in cases.items():
        output = tmp_path / f"{name}.root"
        status, stderr = call("jettag-predict", monkeypatch, capsys, *common, f"output={output}", *extra)
        assert status == 0, stderr[-3000:]
        scores[name] = uproot.open(output)["Events"]["score_label_Tbqq"].array(library="np")
    # the run's data.eval_batch_size unless given
    assert [kwargs["batch_size"] for kwargs in seen] == [20, 7, 20]
    assert all(str(kwargs["fabric"].device) == "cpu" for kwargs in seen)
    np.testing.assert_allclose(scores["given"], scores["run"], rtol=0, atol=1e-5)
    # bf16 autocast: other numbers, close to the float32 ones
    assert not np.array_equal(scores["bf16"], scores["run"])
    assert np.median(np.abs(scores["bf16"] - scores["run"])) < 0.02
    assert np.corrcoef(scores["bf16"], scores["run"])[0, 1] > 0.9
