"""``demist train`` on SLURM: two srun tasks with DDP, and a SIGTERM'd job that resumes.

Both tests submit the script ``demist-slurm --train`` writes, with the small
preset on the phantom cohort.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}


def _submit_train(slurm, bids: Path, out: Path, work: Path, *demist_args: str) -> str:
    res = subprocess.run(
        [sys.executable, "-m", "demist_bids.cluster.cli", "--train", str(bids), str(out),
         "-w", str(work), "--ntasks-per-node", "2", "--cpus-per-task", "1", "--mem", "6G",
         "--time", "00:40:00", "--", "--folds", "1", "--preset", "small",
         "--psr-derivatives", str(bids / "derivatives" / "qmt"), *demist_args],
        env=slurm.env, capture_output=True, text=True, check=True,
    )
    return re.search(r"training job (\d+)", res.stdout).group(1)


def _train_log(out: Path, job: str) -> str:
    path = out / "logs" / "slurm" / f"train_{job}.log"
    return path.read_text() if path.exists() else ""


def test_two_tasks_identical_weights(slurm, phantom_cohort, tmp_path):
    out = tmp_path / "train"
    job = _submit_train(slurm, phantom_cohort, out, tmp_path / "work", "--max-steps", "2")
    record = slurm.wait(job, timeout=2200)[job]
    log = _train_log(out, job)
    print("\n".join(line for line in log.splitlines() if "demist-slurm" in line))  # pytest -rP
    assert record["JobState"] == "COMPLETED", log[-4000:]
    assert "2 processes" in log
    stage_dirs = [d for d in sorted((out / "training" / "all").iterdir())
                  if (d / "weights-rank0.sha256").exists()]
    assert stage_dirs, "no stage recorded per-rank weight digests"
    for stage in stage_dirs:
        digests = [(stage / f"weights-rank{r}.sha256").read_text() for r in (0, 1)]
        assert digests[0] == digests[1], f"ranks differ after stage {stage.name}"


def _diagnostics(slurm, out: Path, job: str, states: list[str]) -> str:
    """What a failed requeue test needs: the states seen, SLURM's own logs, the job's log."""
    seen = [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]]
    daemons = "\n".join(f"--- {name}.log\n" + "\n".join(
        line for line in slurm.log_tail(name, lines=400).splitlines()
        if f"JobId={job}" in line or f"job {job}" in line or f"StepId={job}" in line)
        for name in ("slurmctld", "slurmd"))
    return f"states seen: {' -> '.join(seen)}\n{daemons}\n--- job log\n{_train_log(out, job)[-3000:]}"


def _rows(csv: Path) -> int:
    return max(len(csv.read_text().splitlines()) - 1, 0) if csv.exists() else 0


def test_sigterm_checkpoint_requeue_resume(slurm, phantom_cohort, tmp_path):
    """SIGTERM mid-stage: checkpoint, exit 75, the job requeues itself and resumes, not restarts."""
    out = tmp_path / "train"
    job = _submit_train(slurm, phantom_cohort, out, tmp_path / "work",
                        "--stage", "ae", "--max-steps", "30")
    stage = out / "training" / "all" / "ae"
    deadline = time.monotonic() + 1800
    while _rows(stage / "log.csv") < 3:
        assert slurm.jobs(job)[job]["JobState"] in {"PENDING", "RUNNING"}, _train_log(out, job)[-4000:]
        assert time.monotonic() < deadline, "training never reached step 3"
        time.sleep(2)
    slurm.run(["scancel", "--signal=TERM", job])

    # The script requeues the job. SLURM holds a requeued job until its old step credentials
    # expire (AuthInfo cred_expire; 30 s on the test cluster) and then starts it on its own:
    # releasing it earlier races the new launch against the revoked credential.
    deadline = time.monotonic() + 300
    seen = []
    while (record := slurm.jobs(job)[job]).get("Restarts", "0") == "0":
        seen.append(record["JobState"])
        assert record["JobState"] not in FINAL, _diagnostics(slurm, out, job, seen)
        assert time.monotonic() < deadline, "the job was not requeued\n" + _diagnostics(slurm, out, job, seen)
        time.sleep(1)
    seen.append(record["JobState"])
    record = slurm.wait(job, timeout=1800)[job]
    log = _train_log(out, job)
    print("\n".join(line for line in log.splitlines() if "demist-slurm" in line or "ae: step" in line
                    or "Resuming" in line or "SIGTERM" in line))  # shown with pytest -rP
    seen.append(record["JobState"])
    assert record["JobState"] == "COMPLETED", _diagnostics(slurm, out, job, seen)
    assert record["Restarts"] == "1"
    assert "exit code 75" in log and "requeueing job" in log
    resumed = re.search(r"Resuming stage ae at step (\d+)", log)
    assert resumed and int(resumed.group(1)) >= 3, log[-4000:]
    assert (stage / "done.json").exists()
