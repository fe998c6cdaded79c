"""demist itself on SLURM: the participant array and the dependent group job on a phantom cohort."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


def test_cohort_array_and_group(slurm, phantom_cohort, tmp_path):
    out, work = tmp_path / "derivatives" / "demist", tmp_path / "work"
    qmt = phantom_cohort / "derivatives" / "qmt"
    res = subprocess.run(
        [sys.executable, "-m", "demist_bids.cluster.cli", str(phantom_cohort), str(out),
         "-w", str(work), "--cpus-per-task", "1", "--mem", "4G", "--time", "00:40:00",
         "--", "--psr-derivatives", str(qmt)],
        env=slurm.env, capture_output=True, text=True, check=True,
    )
    array_id = res.stdout.split("array job ")[1].split(";")[0]
    group_id = res.stdout.split("group job ")[1].split()[0]
    records = slurm.wait(array_id, group_id, timeout=2200)
    logs = out / "logs" / "slurm"
    states = {key: rec["JobState"] for key, rec in records.items()}
    for key, rec in sorted(records.items()):  # shown with pytest -rP
        print(key, rec["JobName"], rec["JobState"], rec["ExitCode"], rec.get("Dependency", ""))
    tails = {p.name: p.read_text()[-2000:] for p in logs.glob("*.log")}
    assert set(states.values()) == {"COMPLETED"}, (states, tails)

    for sub in ("01", "02", "03"):
        maps = list((out / f"sub-{sub}").rglob(f"sub-{sub}*_desc-synth_PSRmap.nii.gz"))
        assert maps, f"sub-{sub} has no synthesized PSR map"
        assert (work / f"sub-{sub}").is_dir(), "each task used its own work directory"
        assert (out / f"sub-{sub}.html").is_file()

    import pandas as pd

    tables = sorted(out.glob("group_*.tsv"))
    assert tables, "the group job wrote its table"
    table = pd.read_csv(tables[0], sep="\t")
    assert table.columns[0] == "bids_name"
    assert {f"sub-{s}" for s in ("01", "02", "03")} <= {n.split("_")[0] for n in table["bids_name"]}

    summary = (logs / "status" / array_id / "tasks.tsv").read_text().splitlines()
    assert [line.split("\t")[2] for line in summary[1:]] == ["0", "0", "0"]
    assert "3 participant tasks, 0 failed" in (logs / f"group_{group_id}.log").read_text()


@pytest.mark.parametrize("plugin_file", ["slurm.yml", "slurmgraph.yml"])
def test_participant_with_the_slurm_plugins(slurm, phantom_cohort, tmp_path, plugin_file):
    """--use-plugin slurm.yml / slurmgraph.yml: every node is a SLURM job; demist waits, reports."""
    from pathlib import Path

    plugin = Path(__file__).resolve().parents[2] / "demist_bids" / "data" / "plugins" / plugin_file
    out = tmp_path / "out"
    res = subprocess.run(
        ["demist", str(phantom_cohort), str(out), "participant", "--participant-label", "01",
         "-w", str(tmp_path / "work"), "--use-plugin", str(plugin)],
        env={**slurm.env, "LOGNAME": "demist"}, capture_output=True, text=True, timeout=2000,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    assert list((out / "sub-01").rglob("sub-01*_desc-synth_PSRmap.nii.gz"))
    assert "No errors to report" in (out / "sub-01.html").read_text()
    batch = list((tmp_path / "work").rglob("batch/batchscript_*.sh"))
    assert len(batch) > 5, "the workflow's nodes were submitted as SLURM batch jobs"
