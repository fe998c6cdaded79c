"""Faults during a participant run (issue 20): real processes, real signals, a real full disk.

- the synthesis worker killed (as the out-of-memory killer does): exit 1 within
  seconds, a crash file naming the node and the signal, nothing half-written;
- SIGTERM to the run, or SIGINT to its process group (Ctrl-C): exit 75, nothing
  half-written, and a rerun resumes from the work directory to identical outputs;
- the output disk filling up during the commit: exit 74, the previous outputs
  untouched;
- four runs of the same subject into one output directory: each finishes or
  refuses in one line, and the outputs are one run's.

(Four runs of different subjects into one output directory:
``test_participant.test_parallel_runs_share_one_output_directory``.)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import fill_disk
from tests.workflows.test_participant import _command, _digest, cohort, tiny_model  # noqa: F401

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="finds workers through /proc"),
]
SUB01 = ("--participant-label", "01", "--output-spaces", "model")


@pytest.fixture(scope="module")
def reference(cohort, tiny_model, tmp_path_factory) -> Path:
    """sub-01's outputs from an undisturbed run."""
    base = tmp_path_factory.mktemp("reference")
    proc = subprocess.run(_command(cohort, base / "out", base / "work", tiny_model, *SUB01),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return base / "out"


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _synthesis_worker(proc: subprocess.Popen, timeout: float = 600) -> int:
    """The pid of the worker process running the ``synthesize`` node (it works in its folder)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for child in _children(proc.pid):
            try:
                if os.readlink(f"/proc/{child}/cwd").endswith("/synthesize"):
                    return child
            except OSError:
                continue
        time.sleep(0.2)
    raise AssertionError(f"no synthesis worker appeared (run ended with {proc.poll()})")


def _end(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"the run was still going {timeout} s after the fault") from None


def _half_written(out: Path) -> list[Path]:
    return list(out.rglob(".staging-*")) + list(out.rglob(".*.part*"))


def _start(cmd) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


@pytest.mark.slow
def test_killed_synthesis_worker_ends_the_run_with_exit_1(cohort, tiny_model, tmp_path):
    out = tmp_path / "out"
    proc = _start(_command(cohort, out, tmp_path / "work", tiny_model, *SUB01))
    os.kill(_synthesis_worker(proc), signal.SIGKILL)
    killed = time.monotonic()
    _, err = _end(proc, timeout=120)
    assert proc.returncode == 1, err[-3000:]
    assert time.monotonic() - killed < 60
    crashes = list((out / "sub-01" / "log").rglob("crash-*synthesize*.txt"))
    assert len(crashes) == 1, err[-3000:]
    text = crashes[0].read_text()
    assert "synthesize" in text and "killed by SIGKILL (signal 9)" in text
    assert "killed by SIGKILL" in err
    assert not list(out.rglob("*_PSRmap.nii.gz")) and not _half_written(out)
    assert "crash-" in (out / "sub-01.html").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM to the run", "SIGINT to its process group"])
def test_stopped_run_is_75_and_resumes_to_identical_outputs(
    cohort, tiny_model, reference, tmp_path, how
):
    out, work = tmp_path / "out", tmp_path / "work"
    cmd = _command(cohort, out, work, tiny_model, *SUB01)
    proc = _start(cmd)
    worker = _synthesis_worker(proc)
    if how.startswith("SIGTERM"):
        os.kill(proc.pid, signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    _, err = _end(proc, timeout=120)
    assert proc.returncode == 75, err[-3000:]
    errors = [line for line in err.splitlines() if "demist: error:" in line]
    assert len(errors) == 1 and ("SIGTERM" if "TERM" in how else "SIGINT") in errors[0]
    assert "Traceback" not in err
    assert not Path(f"/proc/{worker}").exists() or \
        Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    assert not list(out.rglob("*_PSRmap.nii.gz")) and not _half_written(out)
    rerun = subprocess.run(cmd, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Executing \"n4_t1w\"" not in rerun.stdout + rerun.stderr  # resumed from the cache
    assert _digest(out) == _digest(reference)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "logs" not in p.relative_to(root).parts}


@pytest.mark.slow
def test_full_output_disk_during_the_commit_is_74_and_keeps_previous_outputs(
    cohort, tiny_model, reference, small_disk, tmp_path
):
    out = small_disk / "out"
    shutil.copytree(reference, out, ignore=shutil.ignore_patterns("logs"))
    before = _files(out)
    fill_disk(small_disk, leave=128 * 1024)  # room for the logs, not for a figure
    proc = subprocess.run(_command(cohort, out, tmp_path / "work", tiny_model, *SUB01,
                                   "--seed", "6"), capture_output=True, text=True)
    assert proc.returncode == 74, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "demist: error:" in line]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert "cannot write the outputs of sub-01" in errors[0]
    assert "No space left on device" in errors[0]
    assert "Traceback" not in proc.stderr
    after = _files(out)
    assert {k: v for k, v in after.items() if k in before} == before
    assert not [k for k in after if k.startswith("sub-01/") and "/log/" not in k
                and k not in before]
    assert not _half_written(out)


@pytest.mark.slow
def test_four_runs_of_one_subject_give_one_runs_outputs(cohort, tiny_model, tmp_path):
    out = tmp_path / "out"
    seeds = (11, 12, 13, 14)
    procs = {seed: _start(_command(cohort, out, tmp_path / f"work{seed}", tiny_model,
                                   "--participant-label", "01", "--seed", seed))
             for seed in seeds}
    ended = {seed: _end(proc, timeout=900) for seed, proc in procs.items()}
    codes = {seed: procs[seed].returncode for seed in seeds}
    assert set(codes.values()) <= {0, 75}, {s: ended[s][1][-2000:] for s in seeds}
    finished = [seed for seed in seeds if codes[seed] == 0]
    assert finished
    for seed in seeds:
        if codes[seed] == 75:
            err = ended[seed][1]
            lines = [line for line in err.splitlines() if "demist: error:" in line]
            assert len(lines) == 1 and "sub-01 is being processed into" in lines[0]
            assert "Traceback" not in err
    anat = out / "sub-01" / "anat"
    used = {json.loads(p.read_text())["Sampler"]["Seed"] for p in anat.glob("*PSRmap.json")}
    assert len(used) == 1 and used <= set(finished), (used, codes)
    about = json.loads((out / "sub-01" / "figures" / "sub-01_desc-about.json").read_text())
    assert f"--seed {used.pop()}" in json.dumps(about)
    assert not _half_written(out)
