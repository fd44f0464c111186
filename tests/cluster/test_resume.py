"""A run stopped in the middle of an epoch (SIGKILL or SIGTERM) resumes from its last checkpoint
(ckpt_path=last) on the batches it had not seen, and ends exactly like an uninterrupted run: the same
optimizer steps on the same jets, the same weights, optimizer and scheduler state and validation
metrics, bit for bit (CPU, one thread; the tiny ParT has dropout, so the random state matters), in
memory and streaming (with loader workers), killed mid-epoch or at an epoch's end. A kill while a
checkpoint is written leaves the previous one loadable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


def same(a, b, where="checkpoint") -> None:
    """`a` and `b` equal exactly, tensors included (nested dicts, lists, numbers)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a, key=str) == sorted(b, key=str), (where, list(a), list(b))
        for key in a:
            same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def assert_same_end(resumed: Path, whole: Path) -> None:
    """The two runs' last checkpoints hold the same weights, optimizer and scheduler state, and the same
    validation metrics (what ModelCheckpoint followed, and every epoch's val/auc in the CSV log)."""
    a, b = last_checkpoint(resumed), last_checkpoint(whole)
    same(a["state_dict"], b["state_dict"], "state_dict")
    same(a["optimizer_states"], b["optimizer_states"], "optimizer_states")
    same(a["lr_schedulers"], b["lr_schedulers"], "lr_schedulers")
    best = [k for k in a["callbacks"] if k.startswith("ModelCheckpoint") and "'val/" in k]
    assert best
    for key in best:
        assert a["callbacks"][key]["best_model_score"] == b["callbacks"][key]["best_model_score"]
    # a run killed by SIGKILL may not have flushed its CSV log: the epochs the resumed run logged
    resumed_metrics, whole_metrics = val_metrics(resumed), val_metrics(whole)
    assert sorted(whole_metrics) == [0, 1] and 1 in resumed_metrics, (resumed_metrics, whole_metrics)
    assert all(resumed_metrics[e] == whole_metrics[e] for e in resumed_metrics), (
        resumed_metrics,
        whole_metrics,
    )


def val_metrics(run_dir: Path) -> dict[int, float]:
    """val/auc of each epoch, from the CSV logs (a resumed run writes a second log version)."""
    found = {}
    for log in sorted(run_dir.glob("**/metrics.csv")):
        lines = log.read_text().splitlines()
        header = lines[0].split(",")
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("val/auc"):
                found[int(row["epoch"])] = float(row["val/auc"])
    return found


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
    assert_same_end(stopped, uninterrupted)


STREAMING = ["data.streaming=true", "data.num_workers=2", "data.piece_size=16", "data.shuffle_buffer=16"]


@pytest.fixture(scope="module")
def uninterrupted_streaming(tiny_files, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("resume_streaming") / "whole"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
        result = train(run_dir, tiny_files, *STREAMING)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


# SIGKILL when step k + 1 starts: last.ckpt then holds step 2 (mid epoch 0) or 4 (the end of epoch 0);
# SIGTERM then: Lightning ends step k + 1 and saves there, step 5 (epoch 1 after one batch: with two loader
# workers, worker 0 is a turn ahead of worker 1)
@pytest.mark.slow
@pytest.mark.parametrize("streaming", [False, True], ids=["memory", "streaming"])
@pytest.mark.parametrize("kill, signal, saved", [(3, "SIGKILL", 2), (5, "SIGKILL", 4), (4, "SIGTERM", 5)],
                         ids=["mid-epoch", "epoch-end", "odd-step"])  # fmt: skip
def test_killed_at_any_step_then_resumed_ends_exactly_like_an_uninterrupted_run(
    streaming, kill, signal, saved, uninterrupted, uninterrupted_streaming, tiny_files, tmp_path
):
    extra = STREAMING if streaming else []
    whole = uninterrupted_streaming if streaming else uninterrupted
    stopped = tmp_path / "stopped"
    result = train(stopped, tiny_files, *extra, "+callbacks.kill._target_=cluster_callbacks.KillAtStep",
                   f"+callbacks.kill.step={kill}", f"+callbacks.kill.signal={signal}")  # fmt: skip
    assert result.returncode == (-9 if signal == "SIGKILL" else 143), result.stderr[-3000:]
    assert last_checkpoint(stopped)["global_step"] == saved
    result = train(stopped, tiny_files, *extra, "ckpt_path=last")
    assert result.returncode == 0, result.stderr[-3000:]
    resumed_steps, whole_steps = steps(stopped), steps(whole)
    assert sorted(resumed_steps) == sorted(whole_steps) == list(range(1, 9))
    for step in range(1, 9):
        assert resumed_steps[step]["jets"] == whole_steps[step]["jets"], step
    assert_same_end(stopped, whole)


KILL_WHILE_WRITING = """
import os, signal, sys, torch
from jettag.checkpoint import AtomicCheckpointIO
io, path = AtomicCheckpointIO(), sys.argv[1]
io.save_checkpoint({"step": 1, "w": torch.arange(4.0)}, path)
real_save = torch.save
def save_half_then_die(obj, f):  # the process dies with half of the new checkpoint on the disk
    real_save(obj, f)
    f.flush()
    f.truncate(f.tell() // 2)
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = save_half_then_die
io.save_checkpoint({"step": 2, "w": torch.zeros(100_000)}, path)
"""


def test_a_kill_while_a_checkpoint_is_written_leaves_the_previous_one(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    result = subprocess.run(
        [sys.executable, "-c", KILL_WHILE_WRITING, str(path)], capture_output=True, text=True
    )
    assert result.returncode == -9, result.stderr
    checkpoint = torch.load(path, weights_only=False)
    assert checkpoint["step"] == 1 and torch.equal(checkpoint["w"], torch.arange(4.0))
    # the half-written file is beside it, and the next write replaces it
    assert (path.parent / ".last.ckpt.partial").exists()
    from jettag.checkpoint import AtomicCheckpointIO

    AtomicCheckpointIO().save_checkpoint({"step": 3}, path)
    assert torch.load(path, weights_only=False)["step"] == 3
    assert not (path.parent / ".last.ckpt.partial").exists()


def test_training_writes_checkpoints_atomically(tmp_path, monkeypatch):
    """Every trainer jettag builds writes through AtomicCheckpointIO, the SLURM one with its own plugin too."""
    for key, value in {"SLURM_NODEID": "0", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NTASKS": "1",
                       "SLURM_JOB_NAME": "test", "SLURM_JOB_ID": "1"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    from hydra import compose, initialize_config_dir

    from jettag.checkpoint import AtomicCheckpointIO
    from jettag.paths import config_dir
    from jettag.pipeline import build_trainer

    with initialize_config_dir(str(config_dir()), version_base=None):
        for trainer in ("default", "ddp_slurm"):
            cfg = compose("train", overrides=[f"trainer={trainer}", "trainer.accelerator=cpu", "trainer.devices=1",
                                              f"paths.output_dir={tmp_path}", "logger=[]"])  # fmt: skip
            built = build_trainer(cfg, task=type("T", (), {"monitor": ("val/auc", "max")})())
            assert isinstance(built.strategy.checkpoint_io, AtomicCheckpointIO), trainer
            if trainer == "ddp_slurm":  # the config's own plugin is kept
                assert type(built.strategy.cluster_environment).__name__ == "SLURMEnvironment"
