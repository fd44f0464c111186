"""Every listed config composes: each task with each model trains two steps with the defaults, through
`jettag-train` as a user runs it (Hydra multiruns, one process each, to spare the start-up), and the
checkpoints follow the metric the task declares (val/auc for classifiers, val/loss for pretraining).
Each option of the other groups (features, data, trainer, logger) runs with the defaults too (a data
option on toy files of its schema; the GPU trainers where there is a GPU); a combination
that is not meant to work (masked particle modelling of a model without particle tokens) stops with
one sentence. Sizes come from the data (12 particles, 2 batches of 16), the models are the shipped ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import run_cli
from omegaconf import OmegaConf

from jettag.paths import config_dir

FAST = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2",
        "data.batch_size=16", "features.max_particles=12"]  # fmt: skip
OPTIONS = {group: sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))
           for group in ("task", "model", "features", "data", "trainer", "logger", "callbacks")}  # fmt: skip
PART_MODELS = ["part", "part_plain", "part_small"]
DECLARED = {"classification": "val/auc", "classification_cosine": "val/auc", "finetune": "val/auc",
            "contrastive": "val/loss", "pretrain": "val/loss"}  # fmt: skip


def sweep(tmp_path_factory, name: str, files: dict, *overrides: str) -> dict[tuple, Path]:
    """Run one multirun; its run directories by their overrides (as sorted tuples)."""
    base = tmp_path_factory.mktemp(name)
    data = [f"data.{split}_files=[{path}]" for split, path in files.items()]
    # run in the sweep's directory: the mlflow logger writes its mlflow.db where it starts
    result = run_cli("jettag-train", "-m", *overrides, *data, *FAST, f"hydra.sweep.dir={base}", cwd=base)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {}
    for run_dir in base.iterdir():
        if (run_dir / ".hydra" / "overrides.yaml").is_file():
            chosen = [
                o for o in OmegaConf.load(run_dir / ".hydra" / "overrides.yaml") if o.split("=")[0] in OPTIONS
            ]
            runs[tuple(sorted(chosen))] = run_dir
    return runs


@pytest.fixture(scope="module")
def task_model_runs(toy_root_files, tmp_path_factory):
    models = ",".join(OPTIONS["model"])
    runs = sweep(tmp_path_factory, "compose_tasks", toy_root_files,
                 "task=classification,classification_cosine,contrastive", f"model={models}")  # fmt: skip
    runs |= sweep(tmp_path_factory, "compose_finetune", toy_root_files, "task=finetune", "task.backbone=random",
                  f"model={models}")  # fmt: skip
    runs |= sweep(
        tmp_path_factory, "compose_mpm", toy_root_files, "task=pretrain", f"model={','.join(PART_MODELS)}"
    )
    return runs


def test_the_options_are_those_shipped():
    assert OPTIONS["task"] == sorted(DECLARED)
    assert {"part", "part_plain", "part_small", "particlenet", "pcnn", "pfn"} == set(OPTIONS["model"])


@pytest.mark.parametrize("task", sorted(DECLARED))
@pytest.mark.parametrize("model", OPTIONS["model"])
def test_each_task_trains_each_model(task_model_runs, task, model):
    if task == "pretrain" and model not in PART_MODELS:
        pytest.skip(
            "masked particle modelling needs particle tokens: test_mpm_of_other_models_is_one_sentence"
        )
    run_dir = task_model_runs[tuple(sorted([f"task={task}", f"model={model}"]))]
    checkpoint = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 2
    monitored = [state for key, state in checkpoint["callbacks"].items() if key.startswith("ModelCheckpoint")
                 and state.get("best_model_score") is not None]  # fmt: skip
    assert monitored and all(f"'monitor': '{DECLARED[task]}'" in key for key in checkpoint["callbacks"]
                             if key.startswith("ModelCheckpoint{'monitor': 'val"))  # fmt: skip
    if DECLARED[task] == "val/auc":  # a classifier is tested and reported
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert 0 <= metrics["auc"] <= 1 and metrics["num_jets"] == 300


@pytest.mark.parametrize("model", ["particlenet", "pcnn", "pfn"])
def test_mpm_of_other_models_is_one_sentence(toy_root_files, tmp_path, model):
    data = [f"data.{split}_files=[{path}]" for split, path in toy_root_files.items()]
    result = run_cli(
        "jettag-train", "task=pretrain", f"model={model}", *data, *FAST, f"hydra.run.dir={tmp_path}"
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(
        "jettag-train: error: task=pretrain (masked particle modelling) needs a"
    ) and ("task=contrastive pretrains any model" in lines[-1])


@pytest.fixture(scope="module")
def group_runs(toy_root_files, tmp_path_factory):
    runs = sweep(
        tmp_path_factory, "compose_features", toy_root_files, f"features={','.join(OPTIONS['features'])}"
    )
    runs |= sweep(
        tmp_path_factory, "compose_loggers", toy_root_files, f"logger={','.join(OPTIONS['logger'])}"
    )
    cpu_trainers = [t for t in OPTIONS["trainer"] if t in ("cpu", "default")]
    runs |= sweep(tmp_path_factory, "compose_trainers", toy_root_files, f"trainer={','.join(cpu_trainers)}",
                  "trainer.accelerator=cpu")  # fmt: skip
    return runs


@pytest.mark.parametrize(
    "option",
    [f"features={o}" for o in OPTIONS["features"]]
    + [f"logger={o}" for o in OPTIONS["logger"]]
    + ["trainer=cpu", "trainer=default"],
)
def test_each_option_of_the_other_groups_trains_with_the_defaults(group_runs, option):
    run_dir = group_runs[(option,)]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["info"]["optimizer_steps"] == 2 and 0 <= metrics["auc"] <= 1


@pytest.fixture(scope="module")
def data_runs(toy_root_files, toy_multiclass_files, toy_parquet_files, tmp_path_factory):
    """Each data option with its own settings (labels, observers, streaming...), on toy files of its schema."""
    multiclass = [o for o in OPTIONS["data"] if o in ("generated_multiclass", "jetclass", "pretrain_set")]
    runs = sweep(tmp_path_factory, "compose_data_multi", toy_multiclass_files, f"data={','.join(multiclass)}",
                 "data.piece_size=200", "data.shuffle_buffer=64")  # fmt: skip
    runs |= sweep(tmp_path_factory, "compose_data_top", toy_root_files, "data=study_topqcd,top_sample")
    runs |= sweep(
        tmp_path_factory, "compose_data_landscape", toy_parquet_files, "data=toplandscape", "features=kin"
    )
    return runs


@pytest.mark.parametrize("option", OPTIONS["data"])
def test_each_data_option_trains_on_files_of_its_schema(data_runs, option):
    assert set(OPTIONS["data"]) == {"generated_multiclass", "jetclass", "pretrain_set", "study_topqcd", "top_sample",
                                 "toplandscape"}  # fmt: skip
    (run_dir,) = [run for key, run in data_runs.items() if f"data={option}" in key]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["info"]["optimizer_steps"] == 2 and 0 <= metrics["auc"] <= 1


@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
def test_gpu_trainers_train_on_a_gpu_and_say_so_without_one(toy_root_files, tmp_path, trainer):
    """trainer=gpu and trainer=ddp train two steps where there is a GPU; without one they stop with one
    sentence pointing to the CPU (ddp_cpu, cpu and default run above and in tests/cluster)."""
    data = [f"data.{split}_files=[{path}]" for split, path in toy_root_files.items()]
    result = run_cli("jettag-train", f"trainer={trainer}", *data, *FAST, f"hydra.run.dir={tmp_path}")
    if torch.cuda.is_available():
        assert result.returncode == 0, result.stderr[-3000:]
        metrics = json.loads((tmp_path / "metrics.json").read_text())
        assert metrics["info"]["optimizer_steps"] == 2
        return
    assert result.returncode == 2, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    assert (
        line.startswith("jettag-train: error: trainer.accelerator=gpu") and "trainer.accelerator=cpu" in line
    ), line
