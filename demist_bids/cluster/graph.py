"""Wait for the jobs Nipype's SLURMGraph plugin submitted.

SLURMGraph submits every node of a workflow at once (with dependencies) and
returns straight away, so a caller that reads the workflow's results after
``wf.run`` must first wait for those jobs. Nipype records them only as job names
(``-J``) in ``<base_dir>/<workflow>/batch/submit_jobs.sh``; this waits until
none of them is left in the queue.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path


def submitted_job_names(batch_dir: Path) -> list[str]:
    """Job names in the submit script SLURMGraph wrote into ``batch_dir``."""
    script = Path(batch_dir) / "submit_jobs.sh"
    if not script.exists():
        return []
    return re.findall(r"\s-J\s+(\S+)\s", script.read_text())


def wait_for_slurm_graph(batch_dir: Path, poll: float = 10.0, timeout: float | None = None) -> None:
    """Block until no job of the last SLURMGraph submission in ``batch_dir`` is queued or running.

    Raises:
        TimeoutError: jobs are still queued after ``timeout`` seconds.
    """
    names = submitted_job_names(batch_dir)
    if not names:
        return
    deadline = None if timeout is None else time.monotonic() + timeout
    query = ["squeue", "--me", "-h", "-o", "%i", "-n", ",".join(names)]
    while subprocess.run(query, capture_output=True, text=True, check=True).stdout.strip():
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"SLURMGraph jobs from {batch_dir} still queued after {timeout} s")
        time.sleep(poll)
