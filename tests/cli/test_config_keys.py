"""Config keys with one meaning each (issue 14).

- `configs/trainer/default.yaml` lists every argument of the installed `lightning.Trainer`, so any of
  them is `trainer.<name>=...`; `trainer.max_steps` stops a tiny run at that step.
- `train.yaml`'s own defaults are the no-argument run: it and every experiment compose to the same
  configuration as before issue 14, when the default run was `experiment: sample_part_small`
  (configs_before_issue14/ holds the files issue 14 rewrote, as they were; composed over today's other
  configs, so later changes to the data, feature or model configs do not matter here).
"""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path

import lightning
import pytest
from helpers import run_cli
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from jettag.paths import config_dir

BEFORE = Path(__file__).parent / "configs_before_issue14"
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
    experiments = sorted(p.stem for p in (BEFORE / "experiment").glob("*.yaml"))
    cases = [(), *((f"experiment={name}",) for name in experiments), ("features=kin",), ("data=toplandscape",),
             ("model=particlenet", "trainer=gpu"), ("experiment=jetclass_part", "trainer=ddp")]  # fmt: skip
    old, new = composed(before, cases), composed(config_dir(), cases)
    lightning_defaults = trainer_arguments()
    for case in cases:
        trainer = new[case]["trainer"]
        added = {key: trainer.pop(key) for key in list(trainer) if key not in old[case]["trainer"]}
        # the Trainer arguments listed since: at Lightning's defaults, as when they were not passed
        assert added == {key: lightning_defaults[key] for key in added}, case
        assert new[case] == old[case], case
    assert new[()]["features"]["max_particles"] == 64 and new[()]["data"]["batch_size"] == 128
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
