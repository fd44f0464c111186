"""A one-node SLURM cluster on localhost for the tests: munged, slurmctld and slurmd from the Debian
`munge` and `slurm-wlm` packages (installed by .ci/run), every file in a temporary directory.

Runs as root (as CI does). Clients (sbatch, squeue, sinfo, submitit, jettag-train -m) find it through
SLURM_CONF; nothing outside the directory is touched and everything started is stopped afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "squeue")


def slurm_installed() -> bool:
    return all(shutil.which(b) for b in BINARIES)


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class LocalSlurm:
    def __init__(self, base: Path):
        self.base = Path(base)
        self.processes: list[subprocess.Popen] = []
        self.env: dict[str, str] = {}

    def _start(self, *command: str) -> None:
        log = open(self.base / f"{Path(command[0]).name}.out", "w")
        self.processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env))

    def start(self, timeout: float = 60) -> LocalSlurm:
        base = self.base
        for sub in ("state", "spool", "munge"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(base / "munge", 0o700)
        key = base / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        munge_socket = base / "munge" / "munge.socket"
        self.env = {**os.environ, "SLURM_CONF": str(base / "slurm.conf")}
        # --force: munged runs as root here; -F: stay in the foreground so it can be stopped by its pid
        self._start("munged", "-F", "--force", f"--socket={munge_socket}", f"--key-file={key}",
                    f"--pid-file={base / 'munge' / 'munged.pid'}", f"--log-file={base / 'munge' / 'munged.log'}",
                    f"--seed-file={base / 'munge' / 'munged.seed'}")  # fmt: skip

        host = socket.gethostname().split(".")[0]
        node = subprocess.run(
            ["slurmd", "-C"], capture_output=True, text=True, check=True
        ).stdout.splitlines()[0]
        node = " ".join(f"RealMemory={min(int(w.split('=')[1]), 4000)}" if w.startswith("RealMemory=") else w
                        for w in node.split())  # fmt: skip
        ctld_port, slurmd_port = _free_ports(2)
        (base / "slurm.conf").write_text(
            f"""ClusterName=jettagtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={base / "state"}
SlurmdSpoolDir={base / "spool"}
SlurmctldPidFile={base / "slurmctld.pid"}
SlurmdPidFile={base / "slurmd.pid"}
SlurmctldLogFile={base / "slurmctld.log"}
SlurmdLogFile={base / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
{node} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""
        )
        deadline = time.monotonic() + timeout
        while not munge_socket.exists():
            self._check(deadline, "munged")
        self._start("slurmctld", "-D", "-c", "-f", str(base / "slurm.conf"))
        self._start("slurmd", "-D", "-f", str(base / "slurm.conf"))
        while True:  # the node must report in and be idle before jobs can start
            result = subprocess.run(
                ["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, env=self.env
            )
            if result.returncode == 0 and result.stdout.strip() == "idle":
                return self
            self._check(
                deadline, f"the node to be idle (sinfo: {result.stdout.strip()} {result.stderr.strip()})"
            )

    def _check(self, deadline: float, what: str) -> None:
        for p in self.processes:
            if p.poll() is not None:
                raise RuntimeError(
                    f"{p.args[0]} exited ({p.returncode}) while waiting for {what}: {self.logs()}"
                )
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}: {self.logs()}")
        time.sleep(0.5)

    def logs(self) -> str:
        texts = []
        for name in ("munged.out", "slurmctld.log", "slurmd.log", "slurmctld.out", "slurmd.out"):
            path = self.base / name
            if path.is_file():
                texts.append(f"--- {name}\n" + path.read_text()[-2000:])
        return "\n".join(texts)

    def stop(self) -> None:
        """slurmd, then slurmctld, then munged (the others need munge to say goodbye)."""
        for p in reversed(self.processes):
            if p.poll() is None:
                p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.processes = []
