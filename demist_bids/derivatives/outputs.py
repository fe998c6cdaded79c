"""Every file of a subject's participant outputs, declared once.

Each :class:`Output` says which BIDS entities name a file, what it holds and
the sidecar fields that never change. Names are built with pybids'
``build_path`` from :data:`PATH_PATTERNS` and read back with
``parse_file_entities``, so the writer (:mod:`.writer`), the group level and
the subject reports agree on them by construction instead of by repeated
string literals (which once let ``sub-X_res-1mm_desc-synth_PSRmap`` pass for a
subject ``sub-X_res-1mm``). The dataset-level files that follow from these
declarations (``dseg.tsv``, the ``.bidsignore`` entries) are built here too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from demist_bids.preprocessing.tissues import LABELS

PATH_PATTERNS = (
    "sub-{subject}[/ses-{session}]/{datatype<anat>|anat}/sub-{subject}[_ses-{session}]"
    "[_space-{space}][_res-{res}][_desc-{desc}]_{suffix<PSRmap|mask|dseg|T1w|FLAIR>}"
    "{extension<.nii.gz|.nii|.json>|.nii.gz}",
    "sub-{subject}[/ses-{session}]/{datatype<anat>|anat}/sub-{subject}[_ses-{session}]"
    "_from-{from}_to-{to}_mode-{mode<image>|image}_{suffix<xfm>|xfm}"
    "{extension<.txt|.h5|.json>|.txt}",
)
"""Where each output lies, relative to the derivatives root (pybids path patterns)."""

_LOCATION = {"subject", "session", "datatype", "extension"}
"""Entities that place a file rather than say which output it is."""

PSR_UNITS = "1"
PSR_UNITS_DESCRIPTION = (
    "Dimensionless ratio of the macromolecular to the free water pool size (not percent); "
    "measured 3 T white matter is about 0.1-0.2"
)
ESTIMATION_REFERENCE = (
    "DEMIST: decoupled multi-stream latent diffusion for quantitative myelin map synthesis "
    "(pool-size ratio from T1w and FLAIR)"
)


@dataclass(frozen=True)
class Output:
    """One output file: its naming entities, its meaning and its fixed sidecar fields."""

    key: str
    entities: dict[str, str]
    """Entities besides subject/session, ``suffix`` included (``extension``: the image's)."""
    sidecar: dict = field(default_factory=dict)
    bids_valid: bool = True
    """False for names BIDS does not define yet: listed in ``.bidsignore``."""

    @property
    def extension(self) -> str:
        return self.entities.get("extension", ".nii.gz")

    def path(self, subject: str, session: str | None = None, *, extension: str | None = None) -> Path:
        """The file's path relative to the derivatives root."""
        from bids.layout.writing import build_path

        entities = {**self.entities, "subject": subject, "extension": extension or self.extension}
        if session:
            entities["session"] = session
        built = build_path(entities, list(PATH_PATTERNS), strict=True)
        if built is None:
            raise ValueError(f"no path pattern fits the {self.key} output: {entities}")
        return Path(built)

    def sidecar_path(self, subject: str, session: str | None = None) -> Path:
        return self.path(subject, session, extension=".json")

    def matches(self, entities: dict) -> bool:
        """Whether parsed entities name this output (any image or sidecar extension)."""
        named = {k: v for k, v in entities.items() if k not in _LOCATION}
        return named == {k: v for k, v in self.entities.items() if k != "extension"}


_PSR = {
    "Description": "Synthesized quantitative magnetization transfer pool-size ratio (PSR = "
    "macromolecular / free water pool size) from T1w and FLAIR by latent diffusion.",
    "Units": PSR_UNITS,
    "UnitsDescription": PSR_UNITS_DESCRIPTION,
    "SkullStripped": True,
    "EstimationAlgorithm": "DEMIST latent diffusion (demist implementation)",
    "EstimationReference": ESTIMATION_REFERENCE,
}

OUTPUTS: dict[str, Output] = {o.key: o for o in (
    Output("psr", {"desc": "synth", "suffix": "PSRmap"}, _PSR, bids_valid=False),
    Output("psr_std", {"desc": "std", "suffix": "PSRmap"}, {
        **_PSR, "Description": "Per-voxel standard deviation of the synthesized PSR across "
        "samples: the spread of the sampler's independent chains, not a calibrated estimate of the "
        "map's error."}, bids_valid=False),
    Output("psr_model", {"res": "1mm", "desc": "synth", "suffix": "PSRmap"}, {
        **_PSR, "Resolution": "1 mm isotropic RAS grid aligned to the T1w (the model's grid)"},
        bids_valid=False),
    Output("brain_mask", {"desc": "brain", "suffix": "mask"},
           {"Type": "Brain", "SkullStripped": False}),
    Output("dseg", {"suffix": "dseg"}, {
        "Description": "Tissue labels (" + ", ".join(f"{i} {a}" for i, _, a in LABELS)
        + "; lookup table dseg.tsv at the dataset root)", "SkullStripped": False,
        "Labels": {str(i): abbr for i, _, abbr in LABELS}}),
    Output("t1w_preproc", {"desc": "preproc", "suffix": "T1w"}, {
        "Description": "The T1w with a validated header, bias-corrected with N4, on its own "
        "grid", "Units": "arbitrary", "SkullStripped": False}),
    Output("flair_preproc", {"desc": "preproc", "suffix": "FLAIR"}, {
        "Description": "The bias-corrected FLAIR rigidly registered to the T1w and resampled "
        "(B-spline) onto the T1w's grid", "Units": "arbitrary", "SkullStripped": False}),
    Output("flair_to_t1w_xfm",
           {"from": "FLAIR", "to": "T1w", "mode": "image", "suffix": "xfm", "extension": ".txt"},
           {"Description": "Rigid FLAIR->T1w transform as an ITK/ANTs text transform (LPS): it "
            "maps T1w points to FLAIR points, so antsApplyTransforms -r T1w -i FLAIR -t this "
            "file resamples the FLAIR onto the T1w (the desc-preproc_FLAIR image)",
            "Type": "rigid"}, bids_valid=False),
)}
"""Every participant output by key; the order is the order they are committed in."""

TEMPLATE = "<template>"
"""Stands for a template's name in :data:`SPACE_OUTPUTS` (``space-``, ``from-``, ``to-``)."""
RES = "<res>"
"""Stands for a template grid's resolution label in :data:`SPACE_OUTPUTS` (``res-``)."""
_TEMPLATE_XFM = ("Nonlinear registration of the bias-corrected T1w brain to the template "
                 "brain (SimpleITK: affine, then a B-spline warp stored as a displacement "
                 "field), an ITK CompositeTransform in HDF5 (affine + displacement field, LPS) "
                 "as ANTs writes it; antsApplyTransforms and nitransforms read it. ")

SPACE_OUTPUTS: dict[str, Output] = {o.key: o for o in (
    Output("psr_space", {"space": TEMPLATE, "res": RES, "desc": "synth", "suffix": "PSRmap"},
           _PSR, bids_valid=False),
    Output("psr_std_space", {"space": TEMPLATE, "res": RES, "desc": "std", "suffix": "PSRmap"},
           OUTPUTS["psr_std"].sidecar, bids_valid=False),
    Output("brain_mask_space", {"space": TEMPLATE, "res": RES, "desc": "brain", "suffix": "mask"},
           {"Type": "Brain", "SkullStripped": False}),
    Output("t1w_to_template_xfm", {"from": "T1w", "to": TEMPLATE, "mode": "image", "suffix": "xfm",
                                   "extension": ".h5"},
           {"Description": _TEMPLATE_XFM + "It maps template points to T1w points, so "
            "antsApplyTransforms -r template -i <T1w-space image> -t this file resamples an "
            "image of the T1w onto the template", "Type": "nonlinear"}, bids_valid=False),
    Output("template_to_t1w_xfm", {"from": TEMPLATE, "to": "T1w", "mode": "image", "suffix": "xfm",
                                   "extension": ".h5"},
           {"Description": _TEMPLATE_XFM + "The inverse of the from-T1w transform (the warp "
            "inverted numerically): it maps T1w points to template points, so "
            "antsApplyTransforms -r T1w -i <template-space image> -t this file resamples an "
            "image of the template onto the T1w", "Type": "nonlinear"}, bids_valid=False),
)}
"""The outputs of each template output space (``--output-spaces``), declared once with
:data:`TEMPLATE`/:data:`RES` placeholders; :func:`in_space` makes a concrete one. The
transforms do not depend on the resolution."""


def in_space(key: str, template: str, res: str | None = None) -> Output:
    """The output ``key`` of :data:`SPACE_OUTPUTS` for one template (and resolution).

    Its own ``key`` is ``<key>@<template>[:res-<res>]``, which :func:`declared` reads back.
    """
    base = SPACE_OUTPUTS[key]
    fill = {TEMPLATE: template, RES: res}
    entities = {k: fill.get(v, v) for k, v in base.entities.items()}
    if any(v is None for v in entities.values()):
        raise ValueError(f"the {key} output needs a resolution")
    name = f"{key}@{template}" + (f":res-{res}" if RES in base.entities.values() else "")
    return Output(name, entities, base.sidecar, base.bids_valid)


def declared(key: str) -> Output:
    """The output named ``key``: one of :data:`OUTPUTS` or a template one (:func:`in_space`)."""
    if key in OUTPUTS:
        return OUTPUTS[key]
    base, _, space = key.partition("@")
    template, _, res = space.partition(":res-")
    if base not in SPACE_OUTPUTS or not template:
        raise KeyError(key)
    return in_space(base, template, res or None)


def _matches_template(out: Output, entities: dict) -> bool:
    named = {k: v for k, v in entities.items() if k not in _LOCATION}
    wanted = {k: v for k, v in out.entities.items() if k != "extension"}
    if set(named) != set(wanted):
        return False
    return all(v in (TEMPLATE, RES) or named[k] == v for k, v in wanted.items())


DSEG_TSV = "dseg.tsv"


def output_path(key: str, subject: str, session: str | None = None, **kwargs) -> Path:
    """Path of output ``key`` of one subject/session, relative to the derivatives root."""
    return OUTPUTS[key].path(subject, session, **kwargs)


def parse(path: str | Path) -> dict:
    """BIDS entities of a file name (pybids), subject included for bare names."""
    from bids.layout import parse_file_entities

    path = Path(path)
    return parse_file_entities(str(path if path.is_absolute() else Path("/") / path),
                               config=["bids", "derivatives"])


def subject_session(path: str | Path) -> tuple[str, str | None]:
    """(subject, session) labels of a file name or ``sub-X[_ses-Y]`` prefix.

    Raises:
        ValueError: the name holds no subject.
    """
    entities = parse(path)
    if "subject" not in entities:
        raise ValueError(f"{path}: no sub-<label> in the name")
    return entities["subject"], entities.get("session")


def identify(path: str | Path) -> str | None:
    """The key of the output ``path`` is (image or sidecar), or None when it is none of them
    (a template-space output gives its :data:`SPACE_OUTPUTS` key)."""
    entities = parse(path)
    if "subject" not in entities:
        return None
    found = next((key for key, out in OUTPUTS.items() if out.matches(entities)), None)
    return found or next((key for key, out in SPACE_OUTPUTS.items()
                          if _matches_template(out, entities)), None)


def dseg_table() -> str:
    """``dseg.tsv``: the BIDS lookup table of the ``dseg`` labels."""
    rows = ["index\tname\tabbreviation"] + [f"{i}\t{name}\t{abbr}" for i, name, abbr in LABELS]
    return "\n".join(rows) + "\n"


def bidsignore_patterns() -> list[str]:
    """Glob patterns hiding the outputs BIDS has no name for yet."""
    patterns = []
    for out in [*OUTPUTS.values(), *SPACE_OUTPUTS.values()]:
        if not out.bids_valid:
            pattern = f"*_{out.entities['suffix']}.*"
            if pattern not in patterns:
                patterns.append(pattern)
    return patterns
