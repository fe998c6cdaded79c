"""A participant run parses each ``config.json`` once, at the command line, and passes it down.

The command line's check (:func:`demist_bids.models.validation.check_model`) is the
one reading; the sampler's resolution, the model card, the boilerplate and the
synthesis node take the configuration it parsed (the node as an input, so a
worker process reads no ``config.json`` either).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest


@pytest.fixture(scope="module")
def model_with_student(tmp_path_factory) -> Path:
    """A tiny model (ddim, 3 steps) with a tiny distilled student (2 steps) in ``student/``."""
    import torch

    from demist_bids.models.demist import build_model
    from demist_bids.models.io import save_model
    from tests.models.tiny import pretend_pretrained, tiny_config

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("model") / "tiny"
    teacher = build_model(tiny_config(sampling={"sampler": "ddim", "steps": 3}))
    pretend_pretrained(teacher)
    save_model(teacher, root, card={"name": "tiny-test", "summary": "random weights"})
    student = build_model(tiny_config(sampling={"sampler": "ddim", "steps": 3,
                                                "distilled_steps": 2}))
    pretend_pretrained(student, seed=1)
    save_model(student, root / "student")
    return root


@pytest.fixture()
def config_reads(monkeypatch) -> Counter:
    """How often each ``config.json`` is read (as text or bytes) from now on."""
    reads: Counter = Counter()
    for method in ("read_text", "read_bytes"):
        original = getattr(Path, method)

        def spy(self, *args, _original=original, **kwargs):
            if self.name == "config.json":
                reads[self.parent.resolve()] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(Path, method, spy)
    return reads


def test_the_participant_command_line_reads_each_config_once(model_with_student, tmp_path,
                                                            config_reads):
    from demist_bids.cli.run import run
    from demist_bids.phantom import generate_cohort

    bids = tmp_path / "bids"
    generate_cohort(bids, subjects=1, seed=3, scale=0.3, control_fraction=0.0)
    config_reads.clear()
    code = run([str(bids), str(tmp_path / "out"), "participant", "--model", str(model_with_student),
                "--sampler", "distilled", "--boilerplate-only", "--skip-bids-validation",
                "-w", str(tmp_path / "work")])
    assert code == 0
    root = model_with_student.resolve()
    assert config_reads == {root: 1, root / "student": 1}
    citation = (tmp_path / "out" / "logs" / "CITATION.md").read_text()
    assert "distilled student (DDIM), 2 steps" in citation


def test_the_synthesis_node_gets_the_resolved_choice_and_its_config(model_with_student):
    from demist_bids.cli.participant import resolve_sampler
    from demist_bids.models.validation import check_model
    from demist_bids.workflows.synthesis import init_synthesis_wf

    checked = check_model(model_with_student)
    choice = resolve_sampler(model_with_student, "distilled", 0, configs=checked.configs)
    assert choice.config is checked.student.config and choice.steps == 2
    wf = init_synthesis_wf(model_dir=model_with_student, sampling=choice)
    node = wf.get_node("synthesize").inputs
    assert Path(node.model_dir) == model_with_student / "student"
    assert (node.sampler, node.steps, node.student) == ("ddim", 2, True)
    assert node.model_config == checked.student.config.to_dict()


def test_resolving_the_sampler_with_parsed_configs_reads_nothing(model_with_student,
                                                                 config_reads):
    from demist_bids.inference.student import resolve_sampling
    from demist_bids.models.validation import check_model

    configs = check_model(model_with_student).configs
    config_reads.clear()
    for sampler in ("auto", "distilled", "dpm++"):
        resolve_sampling(model_with_student, sampler, 0, configs=configs)
    assert not config_reads
    choice = resolve_sampling(model_with_student, "auto")  # the student, by default (issue 19)
    assert choice.student and choice.config == configs[choice.model_dir]
    assert resolve_sampling(model_with_student, "dpm++").config == configs[model_with_student]


def test_the_synthesis_node_reads_no_config_when_given_one(model_with_student, tmp_path,
                                                           config_reads):
    from nipype.pipeline import engine as pe

    from demist_bids.interfaces.synthesis import Synthesize
    from demist_bids.models.validation import check_model

    student = check_model(model_with_student).student
    rng = np.random.default_rng(0)
    for name in ("t1w", "flair"):
        nib.save(nib.Nifti1Image(rng.random((32, 32, 32)).astype(np.float32), np.eye(4)),
                 tmp_path / f"{name}.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((32, 32, 32), np.uint8), np.eye(4)), tmp_path / "mask.nii.gz")
    node = pe.Node(Synthesize(t1w=str(tmp_path / "t1w.nii.gz"), flair=str(tmp_path / "flair.nii.gz"),
                              brain_mask=str(tmp_path / "mask.nii.gz"),
                              model_dir=str(student.directory), model_config=student.config.to_dict(),
                              student=True, sampler="ddim", steps=2),
                   name="synthesize", base_dir=str(tmp_path / "work"))
    config_reads.clear()
    result = node.run()
    assert not config_reads  # in a worker as here: the configuration came with the inputs
    info = json.loads(Path(result.outputs.info).read_text())
    assert (info["sampler"], info["scheduler"], info["steps"]) == ("distilled", "ddim", 2)
