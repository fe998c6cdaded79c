"""Lay the phantom's images out as a BIDS dataset with three derivative datasets.

Per session (``[ses-YY]`` only with several sessions)::

    sub-XX/[ses-YY/]anat/sub-XX[_ses-YY]_{T1w,FLAIR}.{nii.gz,json}
    derivatives/qmt/      same folder  _PSRmap.{nii.gz,json}              float32
    derivatives/lesions/  same folder  _desc-lesion_mask.{nii.gz,json}    uint8
    derivatives/phantom/  same folder  _desc-brain_mask.{nii.gz,json}     uint8
                                       _dseg.{nii.gz,json}                uint8 (+ dseg.tsv)
                                       _from-FLAIR_to-T1w_mode-image_xfm.json

All derivatives share the T1w grid and affine. ``PSRmap`` and a JSON-only
transform are not BIDS names, so ``derivatives/qmt`` and ``derivatives/phantom``
carry a ``.bidsignore`` for them; every folder passes bids-validator-deno.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import bids_files as bf
from .acquisition import HeadMotion

#: Derivative images: key -> (dataset folder, name suffix, dtype, sidecar).
DERIVED_IMAGES = {
    "psr": (
        "qmt",
        "PSRmap",
        np.float32,
        {
            "Description": (
                "Measured-PSR stand-in: qMT pool-size ratio (macromolecular / free pool), "
                "simulated from the subject's true tissue, myelin and lesion state with "
                "measurement noise, on the T1w grid, zero outside the brain"
            ),
            "Units": "1",
            "SkullStripped": True,
        },
    ),
    "lesion_mask": (
        "lesions",
        "desc-lesion_mask",
        np.uint8,
        {
            "Description": "True white-matter lesion mask on the T1w grid",
            "Type": "Lesion",
        },
    ),
    "brain_mask": (
        "phantom",
        "desc-brain_mask",
        np.uint8,
        {
            "Description": "True brain mask (grey + white matter + CSF inside the pial surface)",
            "Type": "Brain",
        },
    ),
    "dseg": (
        "phantom",
        "dseg",
        np.uint8,
        {
            "Description": "True tissue labels on the T1w grid: 1 CSF, 2 GM, 3 WM (lesions as WM)",
        },
    ),
}

#: Derivative datasets: folder -> (name, description, .bidsignore content).
DERIVATIVE_DATASETS = {
    "qmt": ("demist-phantom qMT", "Measured-PSR stand-ins (qMT pool-size ratio)", "*_PSRmap.*\n"),
    "lesions": ("demist-phantom lesions", "True lesion masks", ""),
    "phantom": (
        "demist-phantom truth",
        "Brain masks, tissue labels and true FLAIR->T1w transforms",
        "*_xfm.json\n",
    ),
}

TRANSFORM_CONVENTION = (
    "4x4 world-to-world matrix in RAS+ millimetres: for a point with world coordinates q "
    "in the FLAIR image (from its NIfTI affine), Matrix @ [q, 1] are the world "
    "coordinates of the same anatomical point in the T1w image. Matrix @ FLAIR_affine "
    "aligns the FLAIR voxels with the T1w anatomy. Not the ITK/ANTs convention (LPS, "
    "fixed-to-moving points): for ITK with the T1w fixed, use D @ inv(Matrix) @ D with "
    "D = diag(-1, -1, 1, 1)."
)


def transform_sidecar(motion: HeadMotion, t1w: str, flair: str) -> dict:
    """The true FLAIR->T1w transform as JSON, with its convention spelled out."""
    return {
        "FromSpace": "FLAIR",
        "ToSpace": "T1w",
        "Convention": TRANSFORM_CONVENTION,
        "Matrix": np.round(motion.flair_to_t1w(), 10).tolist(),
        "HeadMotion": {
            "RotationDegreesXYZ": list(motion.rotation_deg),
            "TranslationMm": list(motion.translation_mm),
            "CenterMm": list(motion.center),
            "Model": "q = R (p - c) + c + t maps T1w-world p to FLAIR-world q; R = Euler 'xyz'",
        },
        "Sources": [f"bids:raw:{flair}", f"bids:raw:{t1w}"],
    }


def write_session(
    root: Path, subject: str, session: str | None, images: dict, motion: HeadMotion
) -> dict[str, Path]:
    """Write one session's raw images, derivatives and truth; return their paths.

    ``images`` holds the acquired ``t1w`` and ``flair`` and the T1w-grid arrays
    named in ``DERIVED_IMAGES``.
    """
    folder, stem = bf.scan_prefix(subject, session)
    t1w, flair = images["t1w"], images["flair"]
    raw = {"t1w": (t1w, "T1w"), "flair": (flair, "FLAIR")}
    paths = {}
    for key, (acquired, suffix) in raw.items():
        sidecar = bf.T1W_SIDECAR if key == "t1w" else bf.FLAIR_SIDECAR
        base = root / folder / f"{stem}_{suffix}"
        paths[key] = bf.write_nifti(base.with_suffix(".nii.gz"), acquired.data, acquired.affine)
        bf.write_json(
            base.with_suffix(".json"), dict(sidecar, SliceThickness=acquired.slice_thickness)
        )
    t1w_uri, flair_uri = (str(paths[key].relative_to(root)) for key in ("t1w", "flair"))
    for key, (dataset, suffix, dtype, meta) in DERIVED_IMAGES.items():
        base = root / "derivatives" / dataset / folder / f"{stem}_{suffix}"
        paths[key] = bf.write_nifti(
            base.with_suffix(".nii.gz"), images[key].astype(dtype), t1w.affine
        )
        bf.write_json(base.with_suffix(".json"), dict(meta, SpatialReference=f"bids:raw:{t1w_uri}"))
    transform = (
        root / "derivatives" / "phantom" / folder / f"{stem}_from-FLAIR_to-T1w_mode-image_xfm"
    )
    paths["transform"] = bf.write_json(
        transform.with_suffix(".json"), transform_sidecar(motion, t1w_uri, flair_uri)
    )
    return paths


def write_dataset_files(root: Path, participants: list[list], *, seed: int, sessions: int) -> None:
    """Dataset-level files: descriptions, README, participants, .bidsignore, dseg.tsv.

    ``participants`` holds the rows of ``participants.tsv``: id, group, age, sex.
    """
    description = bf.raw_description(seed, len(participants), sessions)
    bf.write_json(root / "dataset_description.json", description)
    (root / "README").write_text(bf.README)
    bf.write_tsv(root / "participants.tsv", ["participant_id", "group", "age", "sex"], participants)
    bf.write_json(root / "participants.json", bf.PARTICIPANTS_JSON)
    for folder, (name, text, ignore) in DERIVATIVE_DATASETS.items():
        path = root / "derivatives" / folder
        bf.write_json(path / "dataset_description.json", bf.derivative_description(name, text))
        if ignore:
            (path / ".bidsignore").write_text(ignore)
    columns = ["index", "name", "abbreviation"]
    bf.write_tsv(root / "derivatives" / "phantom" / "dseg.tsv", columns, bf.DSEG_LABELS)
