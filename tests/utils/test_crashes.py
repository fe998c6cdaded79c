"""The one crash-file reader, on a crash file Nipype itself wrote."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from demist_bids.utils.crashes import find_crashes, read_crash


def _boom(x):
    raise ValueError(f"brain mask of {x} is empty")


def nipype_crash(base: Path) -> Path:
    """Run a one-node Nipype workflow whose node raises; return the text crash file it wrote."""
    from nipype.interfaces.utility import Function
    from nipype.pipeline import engine as pe

    wf = pe.Workflow("demist_wf", base_dir=str(base / "work"))
    node = pe.Node(Function(input_names=["x"], output_names=["y"], function=_boom),
                   name="single_subject_01_ses_2_synthesis")
    node.inputs.x = "sub-01_ses-2"
    wf.add_nodes([node])
    wf.config["execution"] = {"crashdump_dir": str(base / "crash"), "crashfile_format": "txt"}
    with pytest.raises(RuntimeError):
        wf.run(plugin="Linear")
    (crash,) = (base / "crash").glob("crash-*.txt")
    return crash


@pytest.fixture(scope="module")
def crash_file(tmp_path_factory) -> Path:
    return nipype_crash(tmp_path_factory.mktemp("nipype"))


def test_a_nipype_crash_file_gives_node_innermost_error_and_session(crash_file):
    text = crash_file.read_text()
    assert "NodeExecutionError" in text and "Traceback" in text  # Nipype's own layout
    crash = read_crash(crash_file)
    assert crash.node == "demist_wf.single_subject_01_ses_2_synthesis"
    assert crash.error == "ValueError: brain mask of sub-01_ses-2 is empty"  # not Nipype's wrapper
    assert crash.sessions == {"2"} and crash.concerns("2") and not crash.concerns("1")
    assert crash.summary == f"{crash_file.name}: ValueError: brain mask of sub-01_ses-2 is empty"
    assert crash.mtime == crash_file.stat().st_mtime


def test_a_crash_without_exception_line_or_session(tmp_path):
    """A worker killed by a signal leaves only demist's sentence: that is the error."""
    path = tmp_path / "crash-x.txt"
    path.write_text("Node: demist_wf.synthesize\n\nthe worker process (pid 7) running "
                    "demist_wf.synthesize was killed by SIGKILL (signal 9)\n")
    crash = read_crash(path)
    assert crash.error.endswith("was killed by SIGKILL (signal 9)")
    assert crash.sessions == frozenset() and crash.concerns(None) and crash.concerns("1")
    path.write_text("")
    assert read_crash(path).error == "empty crash file"


def test_find_crashes_of_a_subject_oldest_first_and_of_one_run(tmp_path):
    paths = []
    for run, stamp in (("run-b", 2_000_000), ("run-a", 1_000_000)):
        path = tmp_path / "sub-01" / "log" / run / f"crash-{run}.txt"
        path.parent.mkdir(parents=True)
        path.write_text(f"Node: x\nRuntimeError: {run}\n")
        os.utime(path, (stamp, stamp))
        paths.append(path)
    assert [c.error for c in find_crashes(tmp_path, "01")] == ["RuntimeError: run-a",
                                                               "RuntimeError: run-b"]
    assert [c.path for c in find_crashes(tmp_path, "01", run_uuid="run-b")] == [paths[0]]
    assert find_crashes(tmp_path, "02") == []
