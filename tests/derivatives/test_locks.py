"""One run per subject and output directory: refused while held, free once the holder dies."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from demist_bids.derivatives.locks import hold_subjects
from demist_bids.exceptions import TemporaryFailure

HOLDER = """
import sys, time
from demist_bids.derivatives.locks import hold_subjects
with hold_subjects(sys.argv[1], ["01"], "holder-run"):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_held_subject_is_refused_until_its_holder_dies(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(TemporaryFailure) as refused:
            with hold_subjects(tmp_path, ["02", "01"], "second-run"):
                pytest.fail("took a subject another process holds")
        message = str(refused.value)
        assert "sub-01 is being processed into" in message and "holder-run" in message
        assert "\n" not in message and refused.value.exit_code == 75
        with hold_subjects(tmp_path, ["02"]):  # sub-02 was released when sub-01 was refused
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with hold_subjects(tmp_path, ["01"], "third-run"):  # the kernel dropped the dead run's lock
        assert "third-run" in (tmp_path / "logs" / "locks" / "sub-01.lock").read_text()


def test_holding_a_subject_removes_what_a_killed_run_half_wrote(tmp_path):
    anat = tmp_path / "sub-01" / "anat"
    staging = anat / ".staging-1234abcd-xyz"
    staging.mkdir(parents=True)
    (staging / "sub-01_desc-synth_PSRmap.nii.gz").write_bytes(b"half")
    (anat / "sub-01_dseg.nii.gz").write_bytes(b"whole")
    (anat / ".sub-01_dseg.json.k2j3.part").write_text("{")
    (tmp_path / ".sub-01.html.a1b2.part").write_text("<html")
    (tmp_path / ".sub-02.html.c3d4.part").write_text("another run's")
    with hold_subjects(tmp_path, ["01"]):
        assert not staging.exists() and not (anat / ".sub-01_dseg.json.k2j3.part").exists()
        assert not (tmp_path / ".sub-01.html.a1b2.part").exists()
    assert (anat / "sub-01_dseg.nii.gz").read_bytes() == b"whole"
    assert (tmp_path / ".sub-02.html.c3d4.part").exists()  # not this run's subject


def test_renames_of_a_commit_hold_sigterm_back(tmp_path):
    """A SIGTERM during the renames is delivered after the last one: the commit lands whole."""
    script = f"""
import os, signal, sys
from pathlib import Path
from demist_bids.utils import atomic
real = os.replace
def replace(src, dst):
    real(src, dst)
    if Path(dst).name == "a.txt":
        os.kill(os.getpid(), signal.SIGTERM)  # between the first and the second rename
os.replace = replace
atomic.commit_files(Path({str(tmp_path)!r}), {{"a.txt": lambda p: p.write_text("a"),
                                               "b.txt": lambda p: p.write_text("b")}})
print("not reached")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGTERM and "not reached" not in proc.stdout
    assert (tmp_path / "a.txt").read_text() == "a" and (tmp_path / "b.txt").read_text() == "b"
