"""Compute threads follow the CPUs the job may use, less its loader workers (issue 16, point 3).

Each source of the limit is set by hand here (affinity in a subprocess, SLURM_CPUS_PER_TASK, cgroup
quota files written in a temporary directory), and the expected counts are worked out by hand.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from jettag import threads


@pytest.fixture
def clean_env(monkeypatch):
    for key in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: None)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    return monkeypatch


def test_the_smallest_limit_counts(clean_env):
    assert threads.usable_cpus() == 8
    clean_env.setenv("SLURM_CPUS_PER_TASK", "4")
    assert threads.usable_cpus() == 4
    clean_env.setattr(threads, "cgroup_cpu_quota", lambda: 3)
    assert threads.usable_cpus() == 3
    clean_env.setattr(os, "sched_getaffinity", lambda pid: {5})
    assert threads.usable_cpus() == 1


def test_loader_workers_ddp_processes_and_an_explicit_choice(clean_env):
    assert threads.compute_threads(loader_workers=0) == 8
    assert threads.compute_threads(loader_workers=3) == 5
    assert threads.compute_threads(loader_workers=20) == 1  # never below one
    clean_env.setenv("LOCAL_WORLD_SIZE", "2")  # two DDP processes on this node: 4 CPUs each
    assert threads.compute_threads(loader_workers=1) == 3
    clean_env.setenv("OMP_NUM_THREADS", "6")  # the user's choice is kept
    assert threads.compute_threads(loader_workers=1) == 6
    clean_env.setenv("SLURM_CPUS_PER_TASK", "not a number")
    clean_env.delenv("OMP_NUM_THREADS")
    clean_env.delenv("LOCAL_WORLD_SIZE")
    assert threads.compute_threads() == 8


@pytest.mark.parametrize(
    "files, expected",
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "150000 100000\n"}, 2),  # 1.5 CPUs: rounded up
        ({"cpu.max": "200000 100000\n"}, 2),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),  # cgroup v1, none
        ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3),
        ({}, None),
    ],
)
def test_cgroup_quota(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert threads.cgroup_cpu_quota(tmp_path) == expected


def test_affinity_of_a_real_process():
    """A process bound to one CPU (as taskset or srun --cpu-bind binds it) counts one."""
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity on this platform")
    code = ("import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
            "os.environ.pop('OMP_NUM_THREADS', None); os.environ.pop('SLURM_CPUS_PER_TASK', None); "
            "from jettag.threads import compute_threads; print(compute_threads())")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "1"


def test_the_command_line_tools_let_idle_threads_sleep():
    """jettag.cli sets OMP_WAIT_POLICY=PASSIVE before torch is imported, unless the user chose one."""
    code = "import os, sys, jettag.cli; print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.split() == ["PASSIVE", "False"]
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.split()[0] == "ACTIVE"
