"""Where the brain template comes from: TemplateFlow when its files are really there, else nilearn.

TemplateFlow is never asked to download anything: offline it leaves 0-byte
stubs, so a file counts only when it exists and is not empty. The MNI152
template nilearn ships (ICBM 2009a symmetric, skull-stripped) is always there.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from ..utils.image_check import check_image_file

LOGGER = logging.getLogger("demist.preprocessing")

TEMPLATEFLOW_NAME = "MNI152NLin2009cAsym"
NILEARN_NAME = "MNI152NLin2009aSym (nilearn)"


@dataclass
class BrainTemplate:
    """A T1w template, its brain mask and whether the template still has its skull."""

    name: str
    t1w: nib.Nifti1Image
    brain_mask: nib.Nifti1Image
    has_skull: bool


def templateflow_home() -> Path:
    """TemplateFlow's folder from the environment (importing templateflow may use the network)."""
    return Path(os.environ.get("TEMPLATEFLOW_HOME", Path.home() / ".cache" / "templateflow"))


def _present(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def templateflow_files(home: Path | None = None) -> tuple[Path, Path] | None:
    """Paths of the MNI152NLin2009cAsym T1w and brain mask at the coarsest present resolution."""
    folder = (home or templateflow_home()) / f"tpl-{TEMPLATEFLOW_NAME}"
    for res in ("02", "01"):
        t1w = folder / f"tpl-{TEMPLATEFLOW_NAME}_res-{res}_T1w.nii.gz"
        mask = folder / f"tpl-{TEMPLATEFLOW_NAME}_res-{res}_desc-brain_mask.nii.gz"
        if _present(t1w) and _present(mask):
            return t1w, mask
    return None


def nilearn_files() -> Path:
    """Path of the MNI152 T1w template inside the installed nilearn wheel."""
    import nilearn

    return (Path(nilearn.__file__).parent / "datasets" / "data"
            / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")


def load_template(home: Path | None = None) -> BrainTemplate:
    """The brain template to register to the subject (TemplateFlow first, then nilearn)."""
    found = templateflow_files(home)
    if found is not None:
        try:
            t1w, mask = (check_image_file(p) for p in found)
            LOGGER.info("brain template: TemplateFlow %s (%s)", TEMPLATEFLOW_NAME, found[0])
            return BrainTemplate(TEMPLATEFLOW_NAME, t1w, mask, has_skull=True)
        except Exception as exc:  # a truncated download: say so and fall back
            LOGGER.warning("TemplateFlow files %s unreadable (%s); using nilearn's", found, exc)
    path = nilearn_files()
    t1w = check_image_file(path)
    LOGGER.info("brain template: %s (%s)", NILEARN_NAME, path)
    return BrainTemplate(NILEARN_NAME, t1w, nilearn_brain_mask(t1w), has_skull=False)


def nilearn_brain_mask(t1w: nib.spatialimages.SpatialImage) -> nib.Nifti1Image:
    """nilearn's own definition of its template's brain mask (``load_mni152_brain_mask``):
    above 20 % of the maximum, holes filled."""
    from scipy import ndimage as ndi

    data = np.asanyarray(t1w.dataobj).astype(np.float32)
    mask = ndi.binary_fill_holes(data > 0.2 * data.max()).astype(np.uint8)
    return nib.Nifti1Image(mask, t1w.affine)


# ---------------------------------------------------------------------------
# Output spaces (--output-spaces): a named TemplateFlow template at one resolution

NILEARN_TEMPLATE = "MNI152NLin2009aSym"
"""TemplateFlow's name of the template nilearn ships (ICBM 152 nonlinear symmetric 2009a,
skull-stripped): the only template served without TemplateFlow's files, under this name."""


@dataclass
class SpaceTemplate:
    """A template grid of an output space: its T1w (brain only), brain mask and provenance."""

    name: str
    res: str
    t1w: nib.Nifti1Image
    brain_mask: nib.Nifti1Image
    source: str
    """Where the images came from (TemplateFlow file or nilearn), for sidecars and reports."""


def space_template_files(name: str, res: str) -> tuple[Path, Path] | None:
    """TemplateFlow's T1w and brain mask of ``name`` at ``res``, when both are real files.

    Only lists what TemplateFlow holds (``templateflow.api.ls``); nothing is
    downloaded: offline TemplateFlow leaves 0-byte stubs, which do not count.
    """
    from templateflow import api

    resolution = int(res) if res.isdigit() else res
    found = []
    for query in ({"suffix": "T1w", "desc": None}, {"suffix": "mask", "desc": "brain"}):
        paths = [Path(p) for p in api.ls(name, resolution=resolution, extension=".nii.gz",
                                         **query)]
        real = [p for p in paths if _present(p) and "cohort-" not in p.name]
        if not real:
            return None
        found.append(real[0])
    return found[0], found[1]


def check_space_template(name: str, res: str) -> str:
    """Where the template of an output space will come from; checked before any work.

    Returns:
        ``"TemplateFlow"`` or ``"nilearn"``.

    Raises:
        MissingInputError: TemplateFlow has no files for it and it is not the
            template nilearn ships (exit 66, naming it).
    """
    from ..exceptions import MissingInputError

    if space_template_files(name, res) is not None:
        return "TemplateFlow"
    if name == NILEARN_TEMPLATE and nilearn_files().is_file():
        return "nilearn"
    raise MissingInputError(
        f"--output-spaces {name}:res-{res}: TemplateFlow has no files for this template in "
        f"{templateflow_home()} (fetch them with templateflow.api.get, or use "
        f"{NILEARN_TEMPLATE}:res-1, which nilearn ships)")


def _declared_grid(name: str, res: str) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The grid TemplateFlow declares for ``res`` of ``name`` (template_description.json)."""
    from templateflow import api

    declared = api.get_metadata(name).get("res") or {}
    grid = next(v for k, v in declared.items() if (str(int(k)) if k.isdigit() else k) == res)
    affine = np.diag([*map(float, grid["zooms"]), 1.0])
    affine[:3, 3] = grid["origin"]
    return affine, tuple(int(n) for n in grid["shape"])


def space_template_grid(name: str, res: str) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Affine and shape of the template grid of an output space, without reading its voxels."""
    files = space_template_files(name, res)
    if files is not None:
        header = nib.load(files[0])
        return header.affine, tuple(int(n) for n in header.shape[:3])
    check_space_template(name, res)  # raises unless it is the nilearn template
    return _declared_grid(name, res)


def load_space_template(name: str, res: str) -> SpaceTemplate:
    """The template of an output space, its T1w reduced to the brain (what demist registers).

    TemplateFlow's files when they are there; for :data:`NILEARN_TEMPLATE`
    without them, nilearn's copy of the same template placed on the grid
    TemplateFlow declares for that resolution (both are in MNI world
    coordinates with 1 mm voxels on integer positions, so this only crops and
    pads), so the outputs' ``space-``/``res-`` entities mean what they say.
    """
    from .grids import resample

    files = space_template_files(name, res)
    if files is not None:
        t1w, mask = (check_image_file(p) for p in files)
        data = np.asanyarray(t1w.dataobj, dtype=np.float32)
        inside = np.asanyarray(mask.dataobj) > 0
        brain = nib.Nifti1Image(data * inside, t1w.affine)
        mask = nib.Nifti1Image(inside.astype(np.uint8), t1w.affine)
        return SpaceTemplate(name, res, brain, mask, f"TemplateFlow ({files[0].name})")
    check_space_template(name, res)  # raises unless it is the nilearn template
    nilearn_t1w = check_image_file(nilearn_files())
    affine, shape = _declared_grid(name, res)
    t1w = resample(nilearn_t1w, affine, shape, order=1)
    mask = resample(nilearn_brain_mask(nilearn_t1w), affine, shape, order=0, dtype=np.uint8)
    return SpaceTemplate(name, res, t1w, mask,
                         f"nilearn {nilearn_files().name} (TemplateFlow has no files)")
