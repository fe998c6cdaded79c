"""Exit codes of the BIDS execution spec on the layout cases in ../shared/data.

Each case checks the code, the one-line message, and that a run failing before
any work leaves nothing in the output directory but its log.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from demist_bids.cli.run import run

SKELETONS = "bids_examples_skeletons"


def _outputs_besides_logs(out: Path) -> list[Path]:
    if not out.exists():
        return []
    return [p for p in out.rglob("*") if "logs" not in p.relative_to(out).parts]


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.INFO, logger="demist")
    return caplog


def _run(args: list, caplog) -> int:
    # run() reconfigures the "demist" logger; re-attach pytest's capture handler.
    code = run([str(a) for a in args] + ["--notrack"])
    return code


def _errors(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)


@pytest.fixture(autouse=True)
def _propagate(monkeypatch):
    """Let pytest's caplog see the records of the 'demist' logger."""
    import demist_bids.cli.run as run_module

    original = run_module._configure_console

    def configure(verbosity):
        original(verbosity)
        logging.getLogger("demist").propagate = True

    monkeypatch.setattr(run_module, "_configure_console", configure)


def test_nonexistent_input_is_16(tmp_path, logs):
    out = tmp_path / "out"
    assert _run([tmp_path / "nope", out, "participant"], logs) == 16
    assert "does not exist" in _errors(logs)
    assert not out.exists()


def test_non_bids_input_is_16(tmp_path, logs):
    (tmp_path / "plain").mkdir()
    out = tmp_path / "out"
    assert _run([tmp_path / "plain", out, "participant"], logs) == 16
    assert "dataset_description.json" in _errors(logs)
    assert not out.exists()


def test_invalid_dataset_fails_the_validator_with_16(shared_data, tmp_path, logs):
    # The skeletons' images are empty files: the real validator rejects them.
    out = tmp_path / "out"
    code = _run([shared_data / SKELETONS / "ds114", out, "participant", "-w", tmp_path / "w"], logs)
    assert code == 16
    assert "EMPTY_FILE" in _errors(logs)
    assert _outputs_besides_logs(out) == []
    assert list((out / "logs").glob("demist-participant-*.log"))


def test_unknown_level_is_17(shared_data, tmp_path, logs):
    out = tmp_path / "out"
    assert _run([shared_data / "openms_subset", out, "predict"], logs) == 17
    assert "unknown analysis level 'predict'" in _errors(logs)
    assert not out.exists()


def test_label_selecting_nothing_is_18(shared_data, tmp_path, logs):
    out = tmp_path / "out"
    code = _run([shared_data / SKELETONS / "genetics_ukbb", out, "participant",
                 "--participant-label", "nobody", "--skip-bids-validation", "-w", tmp_path / "w"],
                logs)
    assert code == 18
    assert "sub-nobody" in _errors(logs)
    assert _outputs_besides_logs(out) == []


def test_session_selecting_nothing_is_18(shared_data, tmp_path, logs):
    out = tmp_path / "out"
    code = _run([shared_data / SKELETONS / "ds114", out, "participant", "--session-label",
                 "never", "--skip-bids-validation", "-w", tmp_path / "w"], logs)
    assert code == 18
    assert _outputs_besides_logs(out) == []


def test_filter_selecting_nothing_is_18(shared_data, tmp_path, logs):
    filt = tmp_path / "filter.json"
    filt.write_text(json.dumps({"t1w": {"acquisition": "doesnotexist"}}))
    out = tmp_path / "out"
    code = _run([shared_data / SKELETONS / "genetics_ukbb", out, "participant",
                 "--bids-filter-file", filt, "--skip-bids-validation", "-w", tmp_path / "w"], logs)
    assert code == 18
    assert _outputs_besides_logs(out) == []


def test_missing_flair_names_subject_and_suffix_66(shared_data, tmp_path, logs):
    out = tmp_path / "out"
    code = _run([shared_data / SKELETONS / "ds114", out, "participant",
                 "--participant-label", "01", "--skip-bids-validation", "-w", tmp_path / "w"], logs)
    assert code == 66
    errors = _errors(logs)
    assert "sub-01 ses-test has no FLAIR image" in errors
    assert _outputs_besides_logs(out) == []


@pytest.mark.parametrize("where", ["same", "work_inside"])
def test_output_or_work_inside_input_is_64(shared_data, tmp_path, logs, where):
    bids = shared_data / "openms_subset"
    args = [bids, bids, "participant"] if where == "same" else \
        [bids, tmp_path / "out", "participant", "-w", bids / "work"]
    assert _run(args, logs) == 64
    assert not (tmp_path / "out").exists()
    assert not (bids / "work").exists()


def test_unwritable_output_is_73(shared_data, tmp_path, logs):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    code = _run([shared_data / "openms_subset", blocker / "out", "participant", "-w",
                 tmp_path / "w"], logs)
    assert code == 73
    assert "cannot write to the output directory" in _errors(logs)


def test_config_is_written_for_every_run(shared_data, tmp_path, logs):
    out = tmp_path / "out"
    _run([shared_data / SKELETONS / "ds114", out, "participant", "--participant-label", "01",
          "--skip-bids-validation", "-w", tmp_path / "w"], logs)
    configs = list((out / "logs").glob("config-*.toml"))
    assert len(configs) == 1
    assert 'participant_label = [\n    "01",\n]' in configs[0].read_text() or \
        'participant_label = ["01"]' in configs[0].read_text()


def test_console_script_exit_code(shared_data, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "demist_bids", str(shared_data / "openms_subset"),
         str(tmp_path / "out"), "banana"], capture_output=True, text=True)
    assert proc.returncode == 17
    assert proc.stderr.count("error") == 1
