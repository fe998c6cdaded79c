"""The NiPreps conveniences: --reports-only, --config-file, --write-graph, --clean-workdir,
--resource-monitor, and the subject report's About, Methods, steps and header fixes.

One real participant run (phantom subject, tiny random model) is shared by the
tests that need outputs; the failure modes need none and run in seconds.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import tomllib
from pathlib import Path

import nibabel as nb
import pytest

from demist_bids.cli.parser import parse_args
from demist_bids.cli.run import run
from demist_bids.derivatives.dataset import BIDSIGNORE, write_dataset_files
from tests.cli.test_exit_codes import (  # noqa: F401 (fixtures: caplog sees demist's records)
    _errors,
    _outputs_besides_logs,
    _propagate,
    logs,
)
from tests.conftest import REPO_ROOT
from tests.workflows.test_participant import _command, tiny_model  # noqa: F401 (fixture)


@pytest.fixture
def bids(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    (root / "sub-01" / "anat").mkdir(parents=True)
    description = {"Name": "x", "BIDSVersion": "1.9.0"}
    (root / "dataset_description.json").write_text(json.dumps(description))
    return root


# -- failure modes -------------------------------------------------------------------------

def test_reports_only_on_an_empty_output_is_66(bids, tmp_path, logs):
    out = tmp_path / "out"
    code = run([str(bids), str(out), "participant", "--reports-only", "-w", str(tmp_path / "w")])
    assert code == 66
    errors = _errors(logs)
    assert errors.count("\n") == 0
    assert "--reports-only" in errors and "no participant outputs" in errors
    assert _outputs_besides_logs(out) == []  # no report, no dataset files
    assert not (tmp_path / "w").exists()  # nothing indexed, nothing computed


@pytest.mark.parametrize("content, message", [
    ("[execution\nbids_dir = ", "cannot read it as a demist configuration"),
    ('[execution]\nanalysis_level = "train"\n', "configuration of a train run"),
    ("[synthesis]\nsamples = \"three\"\n", "synthesis.samples"),
    ("[execution]\nno_such_setting = 1\n", "no setting 'no_such_setting'"),
])
def test_config_file_that_does_not_parse_or_is_another_level_is_64(bids, tmp_path, logs,
                                                                    content, message):
    saved = tmp_path / "config-old.toml"
    saved.write_text(content)
    out = tmp_path / "out"
    code = run([str(bids), str(out), "participant", "--config-file", str(saved)])
    assert code == 64
    errors = _errors(logs)
    assert errors.count("\n") == 0 and message in errors and str(saved) in errors
    assert not out.exists()  # refused before the output directory was touched


def test_missing_config_file_is_64(bids, tmp_path, logs):
    assert run([str(bids), str(tmp_path / "out"), "group", "--config-file",
                str(tmp_path / "nope.toml")]) == 64
    assert "nope.toml" in _errors(logs)


def test_clean_workdir_refuses_a_work_dir_holding_the_output(bids, tmp_path, logs):
    work = tmp_path / "w"
    (work / "keep").mkdir(parents=True)
    assert run([str(bids), str(work / "out"), "participant", "-w", str(work),
                "--clean-workdir"]) == 64
    assert "--clean-workdir would delete the output directory" in _errors(logs)
    assert (work / "keep").is_dir()


# -- the parser and the writer, without a run -----------------------------------------------

def test_config_file_values_with_command_line_overrides(bids, tmp_path):
    first = parse_args([str(bids), str(tmp_path / "out"), "participant", "--samples", "3",
                        "--seed", "7", "--participant-label", "01", "--nprocs", "2",
                        "--resource-monitor", "-w", str(tmp_path / "w")])
    saved = first.to_filename(tmp_path / "config-first.toml")
    again = parse_args([str(bids), str(tmp_path / "out2"), "participant", "--config-file",
                        str(saved), "--seed", "9"])
    assert again.synthesis.samples == 3 and again.execution.participant_label == ["01"]
    assert again.nipype.nprocs == 2 and again.nipype.resource_monitor
    assert again.execution.work_dir == tmp_path / "w"
    assert again.seeds.master == 9  # given on the command line: it wins
    assert again.execution.output_dir == tmp_path / "out2"  # positional arguments always win
    assert again.execution.run_uuid != first.execution.run_uuid
    assert again.execution.config_file == saved


def test_old_bidsignore_gains_the_transform_pattern(bids, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    old = "*_PSRmap.*\n*.html\nlogs\nmy_notes.txt\n"  # an older demist's file, plus a user line
    (out / ".bidsignore").write_text(old)
    write_dataset_files(out, bids)
    lines = (out / ".bidsignore").read_text().splitlines()
    assert lines[:4] == old.splitlines()  # kept as it was, in order
    assert "*_xfm.*" in lines and set(BIDSIGNORE) <= set(lines)
    assert len(lines) == len(set(lines))
    before = (out / ".bidsignore").read_text()
    write_dataset_files(out, bids)  # complete: left alone
    assert (out / ".bidsignore").read_text() == before


def test_reports_only_covers_crashed_subjects_and_older_outputs(tmp_path, logs):
    from tests.group import cohort as toy

    c = toy.make_cohort(tmp_path)
    c.add_result("01", report=False)  # outputs of an older demist: no run record beside them
    c.add_input("02")
    c.add_crash("02", "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB")
    c.add_input("03")  # never run: no trace in OUT, so no report
    code = run([str(c.bids), str(c.out), "participant", "--reports-only",
                "-w", str(tmp_path / "w")])
    assert code == 0
    first = (c.out / "sub-01.html").read_text()
    assert "No run record was found" in first and "0.1.0" in first  # version from the sidecar
    assert "<li>reoriented</li>" in first and "No errors to report" in first
    crashed = (c.out / "sub-02.html").read_text()
    assert "crash-20260101-02.txt: RuntimeError: CUDA out of memory" in crashed
    assert "sub-02: no PSR map was produced" in crashed
    assert not (c.out / "sub-03.html").exists()
    assert (c.out / "dataset_description.json").is_file()


# -- one real participant run --------------------------------------------------------------

@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """One phantom subject whose T1w has no valid sform (a header fix the report must list)."""
    from demist_bids.phantom import generate_cohort

    root = tmp_path_factory.mktemp("cohort") / "bids"
    generate_cohort(root, subjects=1, seed=3, scale=0.45, control_fraction=0.0)
    t1w_path = root / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    t1w = nb.load(t1w_path)
    t1w.header.set_qform(t1w.affine, code=1)
    t1w.header.set_sform(t1w.affine, code=0)
    nb.Nifti1Image(t1w.get_fdata(dtype="float32"), None, t1w.header).to_filename(t1w_path)
    return root


@pytest.fixture(scope="module")
def monitored_run(cohort, tiny_model, tmp_path_factory):  # noqa: F811
    base = tmp_path_factory.mktemp("run")
    out, work = base / "out", base / "work"
    (work / "stale").mkdir(parents=True)
    (work / "stale" / "result.pklz").write_text("left by an earlier run")
    command = _command(cohort, out, work, tiny_model, "--skip-bids-validation", "--write-graph",
                       "--resource-monitor", "--clean-workdir")
    # run from elsewhere than the repository: nothing may land in the current directory
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(command, capture_output=True, text=True, cwd=base, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, work, proc.stderr


def _run_id(out: Path) -> str:
    configs = sorted((out / "logs").glob("config-*.toml"))
    assert len(configs) == 1
    return tomllib.loads(configs[0].read_text())["execution"]["run_uuid"]


@pytest.mark.slow
def test_work_dir_was_cleaned_and_graph_written(monitored_run):
    out, work, stderr = monitored_run
    assert not (work / "stale").exists()
    graphs = list(work.glob("demist_*_wf/graph.dot"))
    assert len(graphs) == 1 and "single_subject_sub_01_wf" in graphs[0].read_text()
    assert "workflow graph written" in stderr


def test_resource_monitor_summary_in_logs(monitored_run):
    out, _, stderr = monitored_run
    run_id = _run_id(out)
    with open(out / "logs" / f"resources-{run_id}.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    nodes = {row["node"].split(".")[-1] for row in rows}
    assert {"n4_t1w", "flair_to_t1w", "commit"} <= nodes
    peaks = [float(r["peak_memory_gb"]) for r in rows if r["peak_memory_gb"] != "n/a"]
    assert peaks and max(peaks) > 0.05  # the sampler's process holds torch: well over 50 MB
    assert "resource monitor:" in stderr and "peak memory" in stderr
    # Nipype's sample files stay in the work directory, not in the directory demist ran from
    assert not list(out.parent.glob(".proc-*")) and list(out.parent.glob("work/*/.proc-*"))


def test_report_has_about_methods_steps_and_header_fixes(monitored_run):
    out, _, _ = monitored_run
    page = (out / "sub-01.html").read_text()
    run_id = _run_id(out)
    about = page[page.index("id='about'"):page.index("id='methods'")]
    assert run_id in about and "--resource-monitor" in about and "Device" in about
    assert "Python" in about and "nipype version" in about
    methods = page[page.index("id='methods'"):page.index("id='errors'")]
    citation = (out / "logs" / "CITATION.md").read_text()
    assert "N4" in methods and "Methods and citations" in methods
    assert citation.splitlines()[4][:40] in methods or "intensity non-uniformity" in methods
    meta = json.loads((out / "sub-01" / "anat" / "sub-01_desc-synth_PSRmap.json").read_text())
    fixes = meta["QC"]["fixes"]
    assert "T1w: no valid sform: copied the qform to the sform" in fixes
    for fix in fixes:  # every recorded fix is listed
        assert f"<li>{fix}</li>" in page.replace("&#x27;", "'")
    assert "Processing steps applied" in page and "N4 intensity non-uniformity" in page
    assert "<li>sub-01_desc-synth_PSRmap.nii.gz</li>" in page
    assert "<li>sub-01_from-FLAIR_to-T1w_mode-image_xfm.txt</li>" in page


def test_reports_only_rebuilds_without_recomputing(monitored_run, cohort, tmp_path, logs):
    out, _, _ = monitored_run
    original = (out / "sub-01.html").read_text()
    anat = sorted((out / "sub-01" / "anat").iterdir())
    stamps = {p: p.stat().st_mtime_ns for p in anat}
    (out / "sub-01.html").unlink()
    (out / ".bidsignore").write_text("*_PSRmap.*\n")  # as an older demist left it
    fresh_work = tmp_path / "w"
    code = run([str(cohort), str(out), "participant", "--reports-only", "-w", str(fresh_work)])
    assert code == 0
    rebuilt = (out / "sub-01.html").read_text()

    def body(page: str) -> str:  # the header says when and by which run the page was built
        return re.sub(r"<header>.*?</header>", "", page)

    assert body(rebuilt) == body(original)
    assert sorted((out / "sub-01" / "anat").iterdir()) == anat
    assert all(p.stat().st_mtime_ns == stamps[p] for p in anat)  # no output rewritten
    assert not fresh_work.exists()  # no workflow, no pybids index
    assert "*_xfm.*" in (out / ".bidsignore").read_text().splitlines()


def test_config_file_reruns_the_saved_settings(monitored_run, cohort, tmp_path):
    out, _, _ = monitored_run
    saved = sorted((out / "logs").glob("config-*.toml"))[0]
    out2 = tmp_path / "out2"
    code = run([str(cohort), str(out2), "participant", "--config-file", str(saved),
                "--boilerplate-only", "-w", str(tmp_path / "w2")])
    assert code == 0
    first = tomllib.loads(saved.read_text())
    again = tomllib.loads(next((out2 / "logs").glob("config-*.toml")).read_text())
    assert again["synthesis"] == first["synthesis"] and again["seeds"] == first["seeds"]
    assert again["nipype"]["resource_monitor"] is True
    assert again["execution"]["config_file"] == str(saved)
    assert again["execution"]["run_uuid"] != first["execution"]["run_uuid"]
    assert (out2 / "logs" / "CITATION.md").is_file() and not list(out2.glob("sub-*"))
