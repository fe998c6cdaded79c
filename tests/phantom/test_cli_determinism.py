"""Same seed, same bytes; the command refuses unsafe output folders; failures leave nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from demist_bids.exceptions import UsageError
from demist_bids.phantom import cohort as cohort_module
from demist_bids.phantom import generate_cohort
from demist_bids.phantom.cli import main

TINY = dict(subjects=2, sessions=1, control_fraction=0.5, scale=0.25)


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_other_seed_differs(tmp_path):
    first = _files_of(tmp_path / "a", seed=11)
    again = _files_of(tmp_path / "b", seed=11)
    other = _files_of(tmp_path / "c", seed=12)
    assert first == again
    images = [name for name in first if name.name.endswith("_T1w.nii.gz")]
    assert images and all(first[name] != other[name] for name in images)


def _files_of(root, *, seed):
    generate_cohort(root, seed=seed, **TINY)
    return _files(root)


def test_cli_writes_then_refuses_non_empty_dir_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "cohort"
    args = [str(out), "--subjects", "1", "--seed", "3", "--scale", "0.25"]
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 0
    assert (out / "participants.tsv").is_file()
    before = _files(out)
    with pytest.raises(SystemExit) as done:
        main([*args[:-1], "0.3"])
    assert done.value.code == 64
    assert "not empty" in capsys.readouterr().err
    assert _files(out) == before  # untouched
    with pytest.raises(SystemExit) as done:
        main([*args[:-1], "0.3", "--overwrite"])
    assert done.value.code == 0
    assert _files(out) != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort"]  # no leftovers


@pytest.mark.parametrize(
    "extra",
    [
        ["--subjects", "0", "--seed", "1"],
        ["--seed", "1"],
        ["--subjects", "1", "--seed", "1", "--scale", "9"],
    ],
)
def test_cli_usage_errors_exit_64(tmp_path, extra):
    with pytest.raises(SystemExit) as done:
        main([str(tmp_path / "x"), *extra])
    assert done.value.code == 64
    assert not (tmp_path / "x").exists()


def test_console_script_help_is_light():
    code = (
        "import sys; from demist_bids.phantom.cli import app; "
        "print(sorted(m for m in ('numpy', 'scipy', 'nibabel', 'torch') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_api_validates_arguments(tmp_path):
    for bad in (dict(subjects=0), dict(sessions=0), dict(control_fraction=1.5), dict(scale=0.1)):
        with pytest.raises(UsageError):
            generate_cohort(tmp_path / "x", **{**dict(subjects=1, seed=1), **bad})
    assert not (tmp_path / "x").exists()


def test_failure_midway_leaves_no_dataset(tmp_path, monkeypatch):
    calls = []
    real = cohort_module._generate_participant

    def fail_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(cohort_module, "_generate_participant", fail_on_second)
    with pytest.raises(RuntimeError, match="disk full"):
        generate_cohort(tmp_path / "cohort", subjects=2, seed=1, scale=0.25)
    assert list(tmp_path.iterdir()) == []  # neither the dataset nor the build folder


def test_empty_existing_dir_is_filled(tmp_path):
    out = tmp_path / "cohort"
    out.mkdir()
    scans = generate_cohort(out, subjects=1, seed=2, scale=0.25, control_fraction=0.0)
    assert scans[0].group == "MS" and scans[0].t1w.is_file()
