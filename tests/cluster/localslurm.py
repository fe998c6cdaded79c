"""A real one-node SLURM cluster on localhost for tests (munged, slurmctld, slurmd).

Everything lives in one private directory: the munge key and socket, the
``slurm.conf`` (clients find it through ``SLURM_CONF``), state, spool and logs.
Ports are picked free at start, so two of these can run side by side on one
machine. The daemons run in the foreground as our own children, so they are
stopped by the process ids we hold, never by name.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scontrol", "scancel")
CRED_EXPIRE_S = 30
"""Step credential lifetime, and the hold on a requeued job before it may start again."""


class SlurmUnavailable(RuntimeError):
    """SLURM cannot be installed or started here; the message says why."""


def ensure_installed(log: Path) -> None:
    """Install Debian's SLURM and munge with apt-get unless they are already there."""
    if all(shutil.which(b) for b in BINARIES):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SlurmUnavailable("slurm-wlm/munge are not installed and apt-get as root is unavailable")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
    with log.open("ab") as out:
        if subprocess.run(install, stdout=out, stderr=out, env=env).returncode != 0:
            subprocess.run(["apt-get", "update"], stdout=out, stderr=out, env=env)
            if subprocess.run(install, stdout=out, stderr=out, env=env).returncode != 0:
                raise SlurmUnavailable(f"apt-get could not install {' '.join(PACKAGES)} (see {log})")
    missing = [b for b in BINARIES if not shutil.which(b)]
    if missing:
        raise SlurmUnavailable(f"installed packages lack {missing}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _memory_mb() -> int:
    text = Path("/proc/meminfo").read_text()
    return int(re.search(r"MemTotal:\s+(\d+)", text).group(1)) // 1024


@dataclass
class LocalSlurm:
    """One controller and one compute node on localhost, all state under ``root``."""

    root: Path
    cpus: int = 4
    """CPUs the node advertises (more than the hardware has, so small jobs share it)."""
    node: str = field(default_factory=socket.gethostname)
    """The node's name; the host name, so that jobs can resolve it (MASTER_ADDR for DDP)."""
    _procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """The environment a client (sbatch, srun, squeue) needs to reach this cluster."""
        return dict(os.environ, SLURM_CONF=str(self.conf))

    def _write_config(self) -> None:
        r = self.root
        for sub in ("state", "spool"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        host = socket.gethostname()
        self.conf.write_text(
            "\n".join(
                [
                    f"ClusterName=demist{os.getpid()}",
                    f"SlurmctldHost={host}(127.0.0.1)",
                    f"SlurmctldPort={_free_port()}",
                    f"SlurmdPort={_free_port()}",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    "AuthType=auth/munge",
                    # cred_expire is also how long SLURM holds a requeued job before it may
                    # start again (default 120 s); shorter keeps the requeue test quick.
                    f"AuthInfo=socket={r / 'munge.socket'},cred_expire={CRED_EXPIRE_S}",
                    "CredType=cred/munge",
                    f"StateSaveLocation={r / 'state'}",
                    f"SlurmdSpoolDir={r / 'spool'}",
                    f"SlurmctldPidFile={r / 'slurmctld.pid'}",
                    f"SlurmdPidFile={r / 'slurmd.pid'}",
                    f"SlurmctldLogFile={r / 'slurmctld.log'}",
                    f"SlurmdLogFile={r / 'slurmd.log'}",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "JobCompType=jobcomp/filetxt",
                    f"JobCompLoc={r / 'jobcomp.txt'}",
                    "MpiDefault=none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_CPU",
                    "ReturnToService=2",
                    "MinJobAge=3600",
                    "KillWait=20",
                    "SlurmdParameters=config_overrides",
                    f"NodeName={self.node} NodeHostname={host} NodeAddr=127.0.0.1 "
                    f"CPUs={self.cpus} RealMemory={_memory_mb()} State=UNKNOWN",
                    "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )

    def _spawn(self, name: str, argv: list[str]) -> None:
        out = (self.root / f"{name}.out").open("ab")
        self._procs[name] = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env,
            start_new_session=True,
        )
        out.close()

    def start(self, timeout: float = 60.0) -> LocalSlurm:
        """Start munged, slurmctld and slurmd; return once the node accepts jobs."""
        if os.geteuid() != 0:
            raise SlurmUnavailable("starting slurmd/munged needs root")
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)  # munged wants a socket directory others can traverse
        key = self.root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self._write_config()
        r = self.root
        self._spawn("munged", [
            "munged", "--foreground", "--force", f"--socket={r / 'munge.socket'}",
            f"--key-file={key}", f"--log-file={r / 'munged.log'}",
            f"--pid-file={r / 'munged.pid'}", f"--seed-file={r / 'munged.seed'}",
        ])
        self._wait_for(lambda: (r / "munge.socket").exists(), 10, "munged did not create its socket")
        self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._spawn("slurmd", ["slurmd", "-D", "-N", self.node, "-f", str(self.conf)])
        self._wait_for(self._node_idle, timeout, "the SLURM node did not become idle")
        return self

    def _node_idle(self) -> bool:
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                raise SlurmUnavailable(f"{name} exited with {proc.returncode}: {self.log_tail(name)}")
        res = self.run(["sinfo", "-h", "-N", "-o", "%T"], check=False)
        return res.returncode == 0 and res.stdout.strip().startswith("idle")

    def _wait_for(self, ready, timeout: float, message: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            time.sleep(0.5)
        raise SlurmUnavailable(f"{message} within {timeout:.0f} s: {self.log_tail('slurmctld')}")

    def log_tail(self, name: str, lines: int = 15) -> str:
        text = ""
        for path in (self.root / f"{name}.log", self.root / f"{name}.out"):
            if path.exists():
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Cancel every job of this cluster, then stop the daemons by their process ids."""
        if "slurmctld" in self._procs and self._procs["slurmctld"].poll() is None:
            self.run(["scancel", "--user", "root", "--full"], check=False)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.run(["squeue", "-h"], check=False).stdout.strip():
                time.sleep(1)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self._procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    # -- client helpers -------------------------------------------------------
    def run(self, argv: list[str], check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        """Run a SLURM client command against this cluster."""
        kwargs.setdefault("env", self.env)
        return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=60, **kwargs)

    def sbatch(self, *args: str, **kwargs) -> str:
        """Submit and return the job id."""
        out = self.run(["sbatch", "--parsable", *args], **kwargs).stdout.strip()
        return out.split(";")[0]

    def wait(self, *job_ids: str, timeout: float = 300.0) -> dict[str, dict[str, str]]:
        """Wait until the jobs (array tasks included) leave the queue; return their records."""
        deadline = time.monotonic() + timeout
        ids = ",".join(job_ids)
        while self.run(["squeue", "-h", "-j", ids], check=False).stdout.strip():
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs {ids} still queued after {timeout:.0f} s")
            time.sleep(1)
        return self.jobs(*job_ids)

    def jobs(self, *job_ids: str) -> dict[str, dict[str, str]]:
        """``scontrol show job`` records by job id (``123_0`` for array tasks)."""
        records = {}
        for job_id in job_ids:
            text = self.run(["scontrol", "-o", "show", "job", job_id]).stdout
            for line in text.splitlines():
                fields = dict(
                    item.split("=", 1) for item in line.split() if "=" in item
                )
                key = fields["JobId"]
                if fields.get("ArrayTaskId"):
                    key = f"{fields['ArrayJobId']}_{fields['ArrayTaskId']}"
                records[key] = fields
        return records
