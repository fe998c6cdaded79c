"""The sampler is decided once at the command line: a missing student is exit 66 before any work,
and the boilerplate names what actually runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from demist_bids.cli.run import run


@pytest.fixture(scope="module")
def phantom_bids(tmp_path_factory) -> Path:
    from demist_bids.phantom.cohort import generate_cohort

    root = tmp_path_factory.mktemp("resolution") / "bids"
    generate_cohort(root, subjects=1, seed=5, scale=0.35, control_fraction=0.0)
    return root


def test_distilled_without_a_student_is_66_before_any_work(phantom_bids, tmp_path, errors):
    import shutil

    from demist_bids.cli.participant import resolve_model

    teacher = tmp_path / "teacher"  # the demo model's own files, without its student/
    shutil.copytree(resolve_model(None)[0], teacher, ignore=shutil.ignore_patterns("student"))
    out, work = tmp_path / "out", tmp_path / "work"
    code = run([str(phantom_bids), str(out), "participant", "--sampler", "distilled", "-w", str(work),
                "--model", str(teacher), "--skip-bids-validation", "--notrack"])
    assert code == 66
    assert "--sampler distilled" in errors() and "holds no student/ model" in errors()
    found = [p for p in out.rglob("*") if p.is_file() and "logs" not in p.relative_to(out).parts] if out.exists() else []
    assert found == []  # nothing but the run's log and config
    assert not work.exists() or not any(work.rglob("*.pklz"))  # no node ran


def test_boilerplate_names_the_resolved_sampler(phantom_bids, tmp_path):
    out = tmp_path / "out"
    code = run([str(phantom_bids), str(out), "participant", "--boilerplate-only", "-w", str(tmp_path / "work"),
                "--skip-bids-validation", "--notrack"])
    assert code == 0
    from demist_bids.models.io import read_model_config
    from demist_bids.cli.participant import resolve_model

    from demist_bids.inference.student import resolve_sampling

    choice = resolve_sampling(resolve_model(None)[0])  # the demo model's student, when it has one
    sampling = read_model_config(choice.model_dir).sampling
    text = (out / "logs" / "CITATION.md").read_text()
    kind = "the model's distilled student (DDIM)" if choice.student else sampling.sampler.upper()
    assert f"The sampler was {kind}, {choice.steps} steps" in text
    if sampling.start < 1:
        assert f"noised to {sampling.start:g} of the noise schedule" in text
