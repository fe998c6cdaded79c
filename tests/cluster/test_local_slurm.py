"""The SLURM plumbing itself: an array, a dependent job and a 2-task srun on the local cluster."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_array_then_dependent_job(slurm, tmp_path):
    """afterany lets the dependent job run after every task, failed ones included."""
    array = slurm.sbatch(
        "--array=0-2", f"--output={tmp_path}/task_%a.log",
        "--wrap", f"echo $SLURM_ARRAY_TASK_ID > {tmp_path}/done_$SLURM_ARRAY_TASK_ID; "
        "test $SLURM_ARRAY_TASK_ID -ne 1",
    )
    group = slurm.sbatch(
        f"--dependency=afterany:{array}", f"--output={tmp_path}/group.log",
        "--wrap", f"ls {tmp_path} | grep -c '^done_'",
    )
    records = slurm.wait(array, group, timeout=120)
    states = {key: rec["JobState"] for key, rec in records.items()}
    assert states == {
        f"{array}_0": "COMPLETED", f"{array}_1": "FAILED", f"{array}_2": "COMPLETED",
        group: "COMPLETED",
    }
    assert (tmp_path / "group.log").read_text().strip() == "3"


def test_srun_two_tasks(slurm, tmp_path):
    """srun starts one process per task with the rank variables DDP reads."""
    job = slurm.sbatch(
        "--ntasks=2", f"--output={tmp_path}/srun.log",
        "--wrap", "srun bash -c 'echo rank=$SLURM_PROCID of=$SLURM_NTASKS'",
    )
    assert slurm.wait(job, timeout=120)[job]["JobState"] == "COMPLETED"
    lines = sorted((tmp_path / "srun.log").read_text().split())
    assert lines == ["of=2", "of=2", "rank=0", "rank=1"]
