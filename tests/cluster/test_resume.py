"""A run stopped in the middle of an epoch (SIGKILL or SIGTERM) resumes from its last checkpoint
(ckpt_path=last) on the batches it had not seen, and ends with the same optimizer steps."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from cluster_helpers import TINY, data_overrides
from helpers import run_cli

HERE = Path(__file__).parent
# 64 training jets in batches of 16: 4 steps per epoch, 2 epochs; last.ckpt every 2 steps
RUN = ["trainer.max_epochs=2", "callbacks.mid_epoch_checkpoint.every_n_train_steps=2", "test=false"]


@pytest.fixture(autouse=True)
def test_callbacks_importable(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))


def train(run_dir: Path, files: dict, *extra: str):
    record = run_dir.parent / f"{run_dir.name}.jsonl"
    return run_cli("jettag-train", *TINY, *RUN, *data_overrides(files), f"hydra.run.dir={run_dir}",
                   "+callbacks.record._target_=cluster_callbacks.RecordBatches", f"+callbacks.record.path={record}",
                   *extra)  # fmt: skip


def steps(run_dir: Path) -> dict[int, dict]:
    """The last record of each optimizer step (a step redone after the restart replaces the lost one)."""
    lines = (run_dir.parent / f"{run_dir.name}.jsonl").read_text().splitlines()
    return {r["step"]: r for r in map(json.loads, lines)}


def last_checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def uninterrupted(tiny_files, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("resume") / "whole"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
        result = train(run_dir, tiny_files)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


# SIGKILL when step 7 (epoch 1, batch 3) starts: last.ckpt holds step 6 (every 2 steps), so step 7 is
# lost and done again. SIGTERM there: Lightning ends step 7, then last.ckpt is written at step 7.
@pytest.mark.slow
@pytest.mark.parametrize("signal, returncode, saved", [("SIGKILL", -9, 6), ("SIGTERM", 143, 7)])
def test_stopped_mid_epoch_then_resumed_ends_like_an_uninterrupted_run(
    signal, returncode, saved, uninterrupted, tiny_files, tmp_path
):
    stopped = tmp_path / "stopped"
    result = train(stopped, tiny_files, "+callbacks.kill._target_=cluster_callbacks.KillAtStep",
                   "+callbacks.kill.step=6", f"+callbacks.kill.signal={signal}")  # fmt: skip
    assert result.returncode == returncode, result.stderr[-3000:]
    last = last_checkpoint(stopped)
    assert (last["global_step"], last["epoch"]) == (saved, 1)

    result = train(stopped, tiny_files, "ckpt_path=last")
    assert result.returncode == 0, result.stderr[-3000:]
    assert last_checkpoint(stopped)["global_step"] == last_checkpoint(uninterrupted)["global_step"] == 8

    # the resumed run went on with the batches it had not seen, in the same order: every step of both
    # runs trained on the same jets, and every training jet was seen once per epoch
    whole_steps, resumed_steps = steps(uninterrupted), steps(stopped)
    assert sorted(resumed_steps) == sorted(whole_steps) == list(range(1, 9))
    for step in range(1, 9):
        assert resumed_steps[step]["jets"] == whole_steps[step]["jets"], step
    for epoch in (0, 1):
        jets = [j for r in resumed_steps.values() if r["epoch"] == epoch for j in r["jets"]]
        assert sorted(jets) == list(range(64))
    assert f"resuming epoch 1 after its first {saved - 4} batches" in result.stdout
