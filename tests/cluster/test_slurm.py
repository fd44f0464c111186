"""A real SLURM scheduler: a 2-run sweep submitted through the submitit launcher (hydra/launcher=slurm)
to a one-node cluster on localhost, then jettag-report over the sweep."""

from __future__ import annotations

import csv
import json
import os

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
