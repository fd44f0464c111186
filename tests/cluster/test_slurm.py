"""A real SLURM scheduler: a 2-run sweep submitted through the submitit launcher (hydra/launcher=slurm)
to a one-node cluster on localhost, then jettag-report over the sweep."""

from __future__ import annotations

import csv
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from cluster_helpers import TINY, data_overrides
from helpers import run_cli
from slurm_cluster import LocalSlurm, slurm_installed


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """munged + slurmctld + slurmd on localhost; SLURM_CONF points the clients at it."""
    if not slurm_installed() or os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI must run the SLURM test: .ci/run installs slurm-wlm and munge and runs as root.")
        pytest.skip("needs the slurm-wlm and munge Debian packages and root (as in CI)")
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SLURM_CONF", cluster.env["SLURM_CONF"])
            yield cluster
    finally:
        cluster.stop()


@pytest.mark.slow
def test_sweep_of_two_runs_through_slurm(slurm, tiny_files, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli("jettag-train", "-m", "hydra/launcher=slurm", "seed=1,2", f"hydra.sweep.dir={sweep}",
                     "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
                     "hydra.launcher.timeout_min=10", "hydra.launcher.partition=debug",
                     "trainer.max_epochs=1", *TINY, *data_overrides(tiny_files), timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:] + slurm.logs()

    # each run ran as a task of a SLURM job array (submitit's log names the job id slurmctld gave it)
    job_logs = sorted((sweep / ".submitit").glob("*/*_log.out"))
    assert len(job_logs) == 2, list((sweep / ".submitit").rglob("*"))
    for num, log in enumerate(job_logs):
        text = log.read_text()
        assert (
            f"JobEnvironment(job_id={log.parent.name}," in text
            and f"run directory {sweep / str(num)}" in text
        )
    aucs = []
    for num, seed in ((0, 1), (1, 2)):
        run_dir = sweep / str(num)
        config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
        assert config["seed"] == seed
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["num_jets"] == 50 and metrics["info"]["optimizer_steps"] == 4
        assert (run_dir / "predictions.root").is_file() and (run_dir / "checkpoints" / "best.ckpt").is_file()
        aucs.append(metrics["auc"])

    # the sweep in one table: one row (the seed is averaged over), mean and sample std of the two AUCs
    result = run_cli("jettag-report", str(sweep), "--no-plots")
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = list(csv.DictReader(open(sweep / "comparison.csv")))
    assert row["runs"] == "2"
    assert float(row["auc_mean"]) == pytest.approx(np.mean(aucs))
    assert float(row["auc_std"]) == pytest.approx(np.std(aucs, ddof=1))


def squeue(job: str) -> str:
    return run_cmd(["squeue", "-h", "-j", job, "-o", "%T %r"]).stdout.strip()


def run_cmd(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


def wait_for(condition, what: str, cluster: LocalSlurm, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{cluster.logs()}")
        time.sleep(0.5)


@pytest.mark.slow
def test_preempted_job_is_requeued_and_resumes(slurm, tiny_files, tmp_path, monkeypatch):
    """sbatch + srun jettag-train trainer=ddp_slurm; SIGUSR1 (what `#SBATCH --signal=SIGUSR1@90` sends
    before the time limit or a preemption) makes Lightning save hpc_ckpt_1.ckpt and requeue the job,
    which resumes from it and ends with the optimizer steps of an uninterrupted run."""
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
    )
    run_dir, output = tmp_path / "run", tmp_path / "job.out"
    train = [str(Path(sys.executable).parent / "jettag-train"), "trainer=ddp_slurm", "trainer.strategy=auto",
             "trainer.precision=32-true", "trainer.sync_batchnorm=false", *TINY, *data_overrides(tiny_files),
             "trainer.max_epochs=3", "callbacks.mid_epoch_checkpoint.every_n_train_steps=2",
             "+callbacks.slow._target_=cluster_callbacks.Slow", f"hydra.run.dir={run_dir}"]  # fmt: skip
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\n#SBATCH --ntasks-per-node=1 --cpus-per-task=1 --mem=1G --requeue\n"
                      f"#SBATCH --open-mode=append --output={output}\nsrun {shlex.join(train)}\n")  # fmt: skip
    job = run_cmd(["sbatch", "--parsable", str(script)]).stdout.strip().split(";")[0]
    assert job.isdigit(), slurm.logs()

    wait_for(lambda: (run_dir / "checkpoints" / "last.ckpt").is_file(), "the first checkpoint", slurm)
    assert run_cmd(["scancel", "--signal=USR1", job]).returncode == 0
    # SLURM holds a requeued job for a while before it may start again; release it at once
    wait_for(lambda: squeue(job).startswith("PENDING"), "the job to be requeued", slurm)
    assert run_cmd(["scontrol", "update", f"JobId={job}", "StartTime=now"]).returncode == 0
    wait_for(
        lambda: not squeue(job) and (run_dir / "metrics.json").is_file(), "the requeued job to end", slurm
    )

    log = output.read_text()
    assert "Restarts=1" in run_cmd(["scontrol", "show", "job", job]).stdout
    assert (run_dir / "hpc_ckpt_1.ckpt").is_file()
    assert f"Restoring states from the checkpoint path at {run_dir / 'hpc_ckpt_1.ckpt'}" in log
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["info"]["optimizer_steps"] == 3 * 4  # 64 jets in batches of 16, 3 epochs
