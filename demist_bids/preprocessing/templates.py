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
    from scipy import ndimage as ndi

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
    data = np.asanyarray(t1w.dataobj).astype(np.float32)
    # nilearn's own definition of its brain mask (load_mni152_brain_mask): > 20 % of the maximum
    mask = ndi.binary_fill_holes(data > 0.2 * data.max()).astype(np.uint8)
    LOGGER.info("brain template: %s (%s)", NILEARN_NAME, path)
    return BrainTemplate(NILEARN_NAME, t1w, nib.Nifti1Image(mask, t1w.affine), has_skull=False)
