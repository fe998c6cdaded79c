"""Small input datasets and participant-output trees with known PSR values.

Every volume is 32^3 at 1 mm: a brain ball with a WM core, a GM shell and a
CSF rim, constant PSR per tissue (so medians are known exactly), and an
optional cubic lesion in the left WM.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from demist_bids.derivatives.outputs import DSEG_TSV, dseg_table
from demist_bids.preprocessing.tissues import CSF, GM, WM

SHAPE = (32, 32, 32)
AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])
AFFINE[:3, 3] = -15.5
WM_PSR, GM_PSR, CSF_PSR, LESION_PSR = 0.18, 0.08, 0.01, 0.10
LESION = (slice(9, 12), slice(15, 18), slice(15, 18))  # 27 voxels, left of the midline (axis 0)


def _radius() -> np.ndarray:
    grid = np.indices(SHAPE).astype(float)
    return np.sqrt(np.sum((grid - 15.5)[...] ** 2, axis=0))


def tissue() -> np.ndarray:
    """dseg in the BIDS order the participant level writes (1 GM, 2 WM, 3 CSF); 0 outside."""
    r = _radius()
    dseg = np.zeros(SHAPE, dtype=np.uint8)
    dseg[r < 13] = CSF
    dseg[r < 11] = GM
    dseg[r < 8] = WM
    return dseg


def lesion_mask() -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[LESION] = 1
    return mask


def save(path: Path, data: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, AFFINE), path)
    return path


def psr_map(offset: float = 0.0, scale: float = 1.0, *, with_lesion: bool = False) -> np.ndarray:
    dseg = tissue()
    psr = np.zeros(SHAPE, dtype=np.float32)
    for label, value in ((CSF, CSF_PSR), (GM, GM_PSR), (WM, WM_PSR)):
        psr[dseg == label] = value + offset
    if with_lesion:
        psr[LESION] = LESION_PSR + offset
    return psr * scale


def sidecar(
    runtime: float = 12.5, *, registration_cost: float = 0.2, brain_ml: float = 9.2
) -> dict:
    return {
        "Description": "Synthesized PSR",
        "Units": "arbitrary",
        "Model": {
            "Name": "demist-demo",
            "Path": "demo",
            "SHA256": "ab" * 32,
            "IsDemo": True,
            "Card": {},
        },
        "Sampler": {"Name": "ddim", "Steps": 4, "Samples": 1, "Seed": 42, "Device": "cpu"},
        "SoftwareVersion": "0.1.0",
        "RuntimeSeconds": runtime,
        "QC": {
            "registration_cost": registration_cost,
            "brain_mask_volume_ml": brain_ml,
            "snr_t1w": 20.0,
            "snr_flair": 15.0,
            "template": "MNI152NLin2009cAsym",
            "skull_stripped_input": False,
            "fixes": ["reoriented"],
            "flair_coverage": 1.0,
        },
    }


@dataclass
class Cohort:
    bids: Path
    out: Path

    def add_input(self, subject: str, session: str | None = None, *, flair: bool = True) -> None:
        anat = self.bids / f"sub-{subject}" / (f"ses-{session}" if session else "") / "anat"
        anat.mkdir(parents=True, exist_ok=True)
        stem = f"sub-{subject}" + (f"_ses-{session}" if session else "")
        (anat / f"{stem}_T1w.nii.gz").write_bytes(b"")
        if flair:
            (anat / f"{stem}_FLAIR.nii.gz").write_bytes(b"")

    def add_result(
        self,
        subject: str,
        session: str | None = None,
        *,
        psr: np.ndarray | None = None,
        std: float | None = None,
        meta: dict | None = None,
        report: bool = True,
    ) -> Path:
        """Write one run's participant outputs; return the PSR map's path."""
        self.add_input(subject, session)
        anat = self.out / f"sub-{subject}" / (f"ses-{session}" if session else "") / "anat"
        stem = f"sub-{subject}" + (f"_ses-{session}" if session else "")
        dseg = tissue()
        save(anat / f"{stem}_dseg.nii.gz", dseg)
        save(anat / f"{stem}_desc-brain_mask.nii.gz", (dseg > 0).astype(np.uint8))
        if std is not None:
            save(
                anat / f"{stem}_desc-std_PSRmap.nii.gz",
                np.where(dseg > 0, std, 0).astype(np.float32),
            )
        path = save(anat / f"{stem}_desc-synth_PSRmap.nii.gz", psr_map() if psr is None else psr)
        (anat / f"{stem}_desc-synth_PSRmap.json").write_text(json.dumps(meta or sidecar()))
        if report:
            (self.out / f"sub-{subject}.html").write_text("<html><body>report</body></html>")
        return path

    def add_crash(self, subject: str, error: str, *, node: str = "demist_wf.synthesis") -> Path:
        crash = (
            self.out
            / f"sub-{subject}"
            / "log"
            / "20260101-000000_abc"
            / f"crash-20260101-{subject}.txt"
        )
        crash.parent.mkdir(parents=True, exist_ok=True)
        crash.write_text(
            f"Node: {node}\nWorking directory: /tmp/work/{node}\n\nNode inputs:\n\nin_file = x.nii.gz\n\n"
            'Traceback (most recent call last):\n  File "/x/nipype/pipeline/plugins/multiproc.py", line 67, in run_node\n'
            '    result["result"] = node.run(updatehash=updatehash)\n'
            f"{error}\n\n"
        )
        return crash


def make_cohort(root: Path, participants: dict[str, str] | None = None) -> Cohort:
    """An empty input dataset (with participants.tsv when given) and output directory."""
    bids, out = root / "bids", root / "out"
    bids.mkdir(parents=True)
    (bids / "dataset_description.json").write_text(
        json.dumps({"Name": "toy cohort", "BIDSVersion": "1.9.0"})
    )
    if participants:
        lines = ["participant_id\tgroup\tage"] + [
            f"sub-{sub}\t{group}\t{30 + i}" for i, (sub, group) in enumerate(participants.items())
        ]
        (bids / "participants.tsv").write_text("\n".join(lines) + "\n")
    (out / "logs").mkdir(parents=True)
    (out / DSEG_TSV).write_text(dseg_table())
    return Cohort(bids, out)
