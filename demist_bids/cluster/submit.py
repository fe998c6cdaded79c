"""Write the scripts and hand them to ``sbatch``: the array first, then the dependent group job."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


class SubmissionError(RuntimeError):
    """sbatch is missing or refused a script; the message carries its error."""


def sbatch(script: Path, *options: str) -> str:
    """Submit ``script`` and return its job id."""
    if shutil.which("sbatch") is None:
        raise SubmissionError("sbatch is not on PATH (use --dry-run to only print the scripts)")
    res = subprocess.run(
        ["sbatch", "--parsable", *options, str(script)], capture_output=True, text=True
    )
    if res.returncode != 0:
        raise SubmissionError(f"sbatch {script.name} failed: {res.stderr.strip()}")
    return res.stdout.strip().split(";")[0]


def submit(participant: Path, group: Path, dependency: str = "afterany") -> tuple[str, str]:
    """Submit the participant array and the group job that waits for it; return both ids."""
    array_id = sbatch(participant)
    group_id = sbatch(group, *dependency_options(array_id, dependency))
    return array_id, group_id


def dependency_options(array_id: str, dependency: str = "afterany") -> list[str]:
    """sbatch options that make the group job wait for the array and know its id.

    With ``afterok`` a failed task would leave the group job pending forever, so
    SLURM is told to cancel it instead.
    """
    options = [f"--dependency={dependency}:{array_id}", f"--export=ALL,DEMIST_ARRAY_JOB_ID={array_id}"]
    if dependency == "afterok":
        options.append("--kill-on-invalid-dep=yes")
    return options
