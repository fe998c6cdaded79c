"""The participant level's MultiProc plugin on a two-node graph: real workers, real signals.

A node announces its worker's pid in a file and sleeps; the test kills that
worker (or interrupts the main thread) and checks the run ends at once, with a
crash file naming the node and the signal, instead of hanging.
"""

from __future__ import annotations

import _thread
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from demist_bids.exceptions import Interrupted
from demist_bids.workflows.multiproc import SafeMultiProcPlugin, WorkerDied, demist_error


def _sleeper(pid_file: str, seconds: float = 120.0) -> str:
    import os
    import time
    from pathlib import Path

    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(seconds)
    return pid_file


def _workflow(base: Path, pid_file: Path):
    from nipype.interfaces import utility as niu
    from nipype.pipeline import engine as pe

    wf = pe.Workflow(name="faults", base_dir=str(base / "work"))
    sleeper = pe.Node(niu.Function(input_names=["pid_file"], output_names=["out"],
                                   function=_sleeper), name="sleeper")
    sleeper.inputs.pid_file = str(pid_file)
    after = pe.Node(niu.IdentityInterface(fields=["out"]), name="after")
    wf.connect(sleeper, "out", after, "out")
    wf.config["execution"] = {"crashdump_dir": str(base / "crash"), "crashfile_format": "txt",
                              "poll_sleep_duration": 0.2}
    return wf


def _written_pid(pid_file: Path) -> int | None:
    """The pid once the worker has written all of it: ``write_text`` creates the file before it writes, so
    on a loaded machine an existing file can still be empty."""
    try:
        text = pid_file.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def _when_written(pid_file: Path, action, timeout: float = 120.0) -> threading.Thread:
    def watch():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _written_pid(pid_file) is None:
            time.sleep(0.1)
        time.sleep(0.3)
        action(_written_pid(pid_file))

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().split(") ")[-1].startswith("Z"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_killed_worker_ends_the_run_with_a_crash_file_naming_node_and_signal(tmp_path):
    pid_file = tmp_path / "worker.pid"
    wf = _workflow(tmp_path, pid_file)
    _when_written(pid_file, lambda pid: os.kill(pid, signal.SIGKILL))
    started = time.monotonic()
    with pytest.raises(WorkerDied, match=r"sleeper was killed by SIGKILL"):
        wf.run(plugin=SafeMultiProcPlugin({"n_procs": 2}))
    assert time.monotonic() - started < 60  # the node alone sleeps 120 s
    crashes = list((tmp_path / "crash").glob("crash-*sleeper*.txt"))
    assert len(crashes) == 1
    text = crashes[0].read_text()
    assert "faults.sleeper" in text and "killed by SIGKILL (signal 9)" in text
    assert not (tmp_path / "work" / "faults" / "after").exists()


def test_worker_stopped_by_sigterm_stops_the_run_as_interrupted(tmp_path):
    """scancel sends SIGTERM to every process of a job: a worker ended so is 75, not a crash."""
    pid_file = tmp_path / "worker.pid"
    wf = _workflow(tmp_path, pid_file)
    _when_written(pid_file, lambda pid: os.kill(pid, signal.SIGTERM))
    with pytest.raises(Interrupted, match=r"sleeper was killed by SIGTERM"):
        wf.run(plugin=SafeMultiProcPlugin({"n_procs": 2}))


@pytest.fixture
def default_sigint():
    """interrupt_main() stands for Ctrl-C and does nothing while SIGINT is ignored: set the precondition
    here instead of inheriting it from whatever ran before in this process."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_interrupted_run_terminates_its_workers(tmp_path, default_sigint):
    pid_file = tmp_path / "worker.pid"
    wf = _workflow(tmp_path, pid_file)
    worker = []
    _when_written(pid_file, lambda pid: (worker.append(pid), _thread.interrupt_main()))
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        wf.run(plugin=SafeMultiProcPlugin({"n_procs": 2}))
    assert time.monotonic() - started < 60
    assert worker and _gone(worker[0]), "the worker outlived the interrupted run"
    node_dir = tmp_path / "work" / "faults" / "sleeper"
    assert not list(node_dir.glob("result_*.pklz"))  # a rerun runs the node again


def test_demist_error_is_read_back_from_a_node_traceback():
    text = ("Traceback (most recent call last):\n  ...\nOSError: [Errno 28] No space left\n\n"
            "The above exception was the direct cause of the following exception:\n\n"
            "\tdemist_bids.exceptions.DemistIOError: cannot write the outputs of sub-01 into "
            "/out: No space left on device\n")
    error = demist_error(["Node failed\n", text])
    assert error.exit_code == 74 and str(error).startswith("cannot write the outputs of sub-01")
    assert demist_error("ValueError: demist_bids.exceptions.Nothing: x") is None
    assert demist_error(None) is None
