"""demist-slurm submitting for real: the array, the dependent group job, failures reported.

A stand-in for demist (a short script with demist's calling convention) keeps
this test about the scheduling: which task runs which subject with which work
directory, and what the group job reports when a task fails. The real demist
on a real cohort is in ``test_slurm_demist.py``.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

STAND_IN = r'''
import argparse, pathlib, sys
p = argparse.ArgumentParser()
p.add_argument("bids"); p.add_argument("out", type=pathlib.Path); p.add_argument("level")
p.add_argument("-w", type=pathlib.Path); p.add_argument("--participant-label")
opts, _ = p.parse_known_args()
if opts.level == "participant":
    (opts.out / f"sub-{opts.participant_label}").mkdir(parents=True, exist_ok=True)
    (opts.out / f"sub-{opts.participant_label}" / "work").write_text(str(opts.w))
    sys.exit(3 if opts.participant_label == "02" else 0)
done = sorted(p.name for p in opts.out.glob("sub-*"))
(opts.out / "group.txt").write_text(" ".join(done))
'''


def test_array_and_group_job(slurm, tmp_path):
    bids = tmp_path / "bids"
    for sub in ("01", "02", "03"):
        (bids / f"sub-{sub}" / "anat").mkdir(parents=True)
    stand_in = tmp_path / "stand_in.py"
    stand_in.write_text(STAND_IN)
    out, work = tmp_path / "out", tmp_path / "work"
    res = subprocess.run(
        [sys.executable, "-m", "demist_bids.cluster.cli", str(bids), str(out), "-w", str(work),
         "--cpus-per-task", "1", "--mem", "500M", "--command", f"{sys.executable} {stand_in}"],
        env=slurm.env, capture_output=True, text=True, check=True,
    )
    array_id, group_id = res.stdout.split("array job ")[1].split(";")[0], res.stdout.split("group job ")[1].split()[0]
    records = slurm.wait(array_id, group_id, timeout=180)
    assert [records[f"{array_id}_{i}"]["JobState"] for i in range(3)] == ["COMPLETED", "FAILED", "COMPLETED"]
    assert records[group_id]["JobState"] == "FAILED", "the group job reports the failed task"
    assert records[group_id]["Dependency"] == "(null)"

    for sub in ("01", "02", "03"):
        assert (out / f"sub-{sub}" / "work").read_text() == str(work / f"sub-{sub}")
    assert (out / "group.txt").read_text() == "sub-01 sub-02 sub-03"
    log_dir = out / "logs" / "slurm"
    summary = (log_dir / "status" / array_id / "tasks.tsv").read_text().splitlines()
    assert [line.split("\t")[:3] for line in summary] == [
        ["participant_id", "session_id", "exit_code"],
        ["sub-01", "", "0"], ["sub-02", "", "3"], ["sub-03", "", "0"],
    ]
    group_log = (log_dir / f"group_{group_id}.log").read_text()
    assert "FAILED sub-02 (exit code: 3)" in group_log
    assert "3 participant tasks, 1 failed" in group_log
    assert "sub-02, array task 1" in (log_dir / f"participant_{array_id}_1.log").read_text()
