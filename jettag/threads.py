"""How many compute threads jettag uses: the CPUs the job may use, minus its loader workers.

PyTorch starts one compute thread per core of the machine, whatever the job was given: a batch slot
of 4 CPUs on a 64-core node ran 64 threads against each other and against the other jobs. Here the
CPUs a job may use are the smallest of

- its CPU affinity (`taskset`, `srun --cpu-bind`, a container's cpuset): `os.sched_getaffinity`,
- `SLURM_CPUS_PER_TASK` (SLURM's allocation, also when the job is not bound to its cores),
- the cgroup CPU quota (`cpu.max` of cgroup v2, `cpu.cfs_quota_us` of v1: `docker --cpus=2`),

and the loader workers (`data.num_workers`, one process each) take their CPUs off that. An explicit
`OMP_NUM_THREADS` is the user's choice and is kept.

Idle OpenMP threads of PyTorch's CPU build (GNU libgomp) spin for a while before sleeping, waiting
for the next parallel region. Alone on the machine that saves a few microseconds per region; beside
other busy processes, spinning threads take the CPU from the thread everyone waits for, and training
slowed about 9x beside two busy processes on two cores. `passive_waits()` sets `OMP_WAIT_POLICY=PASSIVE`
(idle threads sleep at once) unless the user set it; it must run before torch is imported (libgomp
reads it when loaded), which the command-line tools do first thing.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

log = logging.getLogger(__name__)


def passive_waits() -> None:
    """Idle OpenMP threads sleep instead of spinning (unless the user chose a policy); call before `import torch`."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def usable_cpus() -> int:
    """The CPUs this process may use: affinity, SLURM_CPUS_PER_TASK and the cgroup quota, the smallest."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    slurm = _positive_int(os.environ.get("SLURM_CPUS_PER_TASK"))
    if slurm:
        cpus = min(cpus, slurm)
    quota = cgroup_cpu_quota()
    if quota:
        cpus = min(cpus, quota)
    return max(1, cpus)


def cgroup_cpu_quota(root: str | Path = "/sys/fs/cgroup") -> int | None:
    """The CPU quota of this process's cgroup in whole CPUs (rounded up), or None without one."""
    root = Path(root)
    try:
        quota, period = (
            (root / "cpu.max").read_text().split()[:2]
        )  # cgroup v2: "max 100000" or "200000 100000"
        if quota != "max":
            return max(1, math.ceil(int(quota) / int(period)))
        return None
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return max(1, math.ceil(quota / period)) if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def compute_threads(loader_workers: int = 0) -> int:
    """Intra-op threads for this process: `OMP_NUM_THREADS` if set, else its part of the usable CPUs
    (shared with the other processes of a DDP run on this node, `LOCAL_WORLD_SIZE`) minus its loader workers."""
    explicit = _positive_int(os.environ.get("OMP_NUM_THREADS"))
    if explicit:
        return explicit
    processes = _positive_int(os.environ.get("LOCAL_WORLD_SIZE")) or 1
    return max(1, usable_cpus() // processes - max(0, loader_workers))


def set_compute_threads(loader_workers: int = 0) -> int:
    """Set PyTorch's intra-op threads to `compute_threads(loader_workers)`; returns the number."""
    import torch

    threads = compute_threads(loader_workers)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    log.debug(
        "compute threads: %d (usable CPUs %d, loader workers %d)", threads, usable_cpus(), loader_workers
    )
    return threads


def _positive_int(value: str | None) -> int | None:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None
