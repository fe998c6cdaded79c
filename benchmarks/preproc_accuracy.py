"""Accuracy and speed of the anatomical preprocessing (``init_anat_preproc_wf``).

Usage::

    python benchmarks/preproc_accuracy.py --phantom 2            # two demist-phantom subjects
    python benchmarks/preproc_accuracy.py --long01 ../shared/data/openms_subset
    python benchmarks/preproc_accuracy.py --phantom 2 --long01 ../shared/data/openms_subset \\
        --work /tmp/preproc-work --json results.json

Per subject/session it runs the whole workflow (Nipype ``Linear`` plugin, one
thread, so the time is the serial cost of one subject) from a clean work
directory, then again from the same one (cache reuse), and reports:

- phantom: residual FLAIR->T1w registration error in mm over every brain voxel
  (mean, 95th percentile, max) against the phantom's true transform, and the
  brain-mask Dice against the phantom's true mask;
- sub-long01 (openms): mean/max displacement in the brain between our rigid
  transform and the data authors' T1w->FLAIR affine (``sourcedata/``; ITK
  convention with the FLAIR as fixed image, so it maps FLAIR points to T1w
  points and is compared with the inverse of ours), and the brain-mask Dice
  against the authors' mask in their common space (our mask taken there
  through their T1w->FLAIR and FLAIR->common affines);
- wall seconds of the first and the second run.
"""

from __future__ import annotations

import os

os.environ.setdefault("NIPYPE_NO_ET", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

FLIP = np.array([-1.0, -1.0, 1.0])  # RAS <-> LPS


def run_subject(t1w: Path, flair: Path, work: Path, voxel_mm: float = 1.0) -> dict:
    """Run the workflow twice in ``work``; return output paths and both wall times."""
    from nipype.interfaces import utility as niu
    from nipype.pipeline import engine as pe

    from demist_bids.workflows.anatomical import init_anat_preproc_wf

    fields = ["brain_mask_native", "flair_to_t1w_xfm", "qc", "t1w_native"]
    times = []
    for _ in range(2):
        wf = init_anat_preproc_wf(voxel_mm=voxel_mm)
        wf.base_dir = str(work)
        wf.inputs.inputnode.t1w = str(t1w)
        wf.inputs.inputnode.flair = str(flair)
        collect = pe.Node(niu.Merge(len(fields)), name="collect")
        wf.connect([(wf.get_node("outputnode"), collect,
                     [(f, f"in{i + 1}") for i, f in enumerate(fields)])])
        start = time.perf_counter()
        graph = wf.run(plugin="Linear")
        times.append(time.perf_counter() - start)
    values = next(n for n in graph.nodes() if n.name == "collect").result.outputs.out
    out = dict(zip(fields, values))
    out["first_run_s"], out["second_run_s"] = times
    return out


def _brain_points(mask_img, step: int = 1) -> np.ndarray:
    """RAS world coordinates of the mask's voxels (every ``step``-th)."""
    ijk = np.argwhere(np.asanyarray(mask_img.dataobj) > 0)[::step]
    return (mask_img.affine[:3, :3] @ ijk.T).T + mask_img.affine[:3, 3]


def _apply_itk(transform, ras: np.ndarray) -> np.ndarray:
    lps = ras * FLIP
    return np.array([transform.TransformPoint(tuple(map(float, p))) for p in lps]) * FLIP


def _dice(a, b) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def phantom(n_subjects: int, work: Path, seed: int) -> list[dict]:
    import SimpleITK as sitk

    from demist_bids.phantom import generate_cohort

    scans = generate_cohort(work / "phantom", subjects=n_subjects, seed=seed)
    rows = []
    for scan in scans:
        out = run_subject(scan.t1w, scan.flair, work / f"work-sub-{scan.subject}")
        truth_mask = nib.load(scan.brain_mask)
        ras = _brain_points(truth_mask, step=3)
        ours = _apply_itk(sitk.ReadTransform(out["flair_to_t1w_xfm"]), ras)
        # phantom matrix M maps FLAIR world -> T1w world; ours maps T1w world -> FLAIR world
        expected = np.linalg.inv(scan.flair_to_t1w)
        expected = (expected[:3, :3] @ ras.T).T + expected[:3, 3]
        error = np.linalg.norm(ours - expected, axis=1)
        qc = json.loads(Path(out["qc"]).read_text())
        rows.append({
            "case": f"phantom sub-{scan.subject}",
            "reg_error_mean_mm": float(error.mean()),
            "reg_error_p95_mm": float(np.percentile(error, 95)),
            "reg_error_max_mm": float(error.max()),
            "mask_dice": _dice(nib.load(out["brain_mask_native"]).dataobj, truth_mask.dataobj),
            "template": qc["template"],
            "first_run_s": out["first_run_s"],
            "second_run_s": out["second_run_s"],
        })
    return rows


def long01(root: Path, work: Path) -> list[dict]:
    import SimpleITK as sitk

    from demist_bids.preprocessing.grids import resample_like

    source = root / "sourcedata" / "openms_longitudinal" / "patient01"
    common = nib.load(source / "brainmask_commonspace.nii.gz")
    rows = []
    for session in (1, 2):
        anat = root / "sub-long01" / f"ses-{session}" / "anat"
        out = run_subject(anat / f"sub-long01_ses-{session}_T1w.nii.gz",
                          anat / f"sub-long01_ses-{session}_FLAIR.nii.gz",
                          work / f"work-long01-ses-{session}")
        authors = sitk.ReadTransform(str(source / f"study{session}_T1W_intrastudy_to_FLAIR.txt"))
        to_common = sitk.ReadTransform(str(source / f"study{session}_FLAIR_to_common_space.txt"))
        mask = nib.load(out["brain_mask_native"])
        ras = _brain_points(mask, step=5)
        ours = _apply_itk(sitk.ReadTransform(out["flair_to_t1w_xfm"]), ras)
        theirs = _apply_itk(authors.GetInverse(), ras)
        displacement = np.linalg.norm(ours - theirs, axis=1)
        # our mask into the common space: common -> FLAIR (to_common) -> T1w (authors)
        chain = sitk.CompositeTransform(3)
        chain.AddTransform(authors)
        chain.AddTransform(to_common)
        in_common = resample_like(mask, common, order=0, transform=chain, dtype=np.uint8)
        rows.append({
            "case": f"sub-long01 ses-{session}",
            "vs_authors_mean_mm": float(displacement.mean()),
            "vs_authors_max_mm": float(displacement.max()),
            "mask_dice": _dice(in_common.dataobj, common.dataobj),
            "template": json.loads(Path(out["qc"]).read_text())["template"],
            "first_run_s": out["first_run_s"],
            "second_run_s": out["second_run_s"],
        })
    return rows


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests read its defaults)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phantom", type=int, default=0, metavar="N", help="phantom subjects")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--long01", type=Path, help="openms_subset folder")
    parser.add_argument("--work", type=Path, help="work folder (default: a temporary one, removed at exit)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    return parser


def main(argv=None) -> None:
    opts = build_parser().parse_args(argv)
    given = contextlib.nullcontext(opts.work) if opts.work else \
        tempfile.TemporaryDirectory(prefix="preproc-accuracy-")
    with given as work:
        work = Path(work)
        work.mkdir(parents=True, exist_ok=True)
        rows = []
        if opts.phantom:
            rows += phantom(opts.phantom, work, opts.seed)
        if opts.long01:
            rows += long01(opts.long01, work)
    for row in rows:
        print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in row.items()))
    if opts.json:
        opts.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
