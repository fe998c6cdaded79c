"""Accuracy and speed of the registration to an output-space template (``--output-spaces``).

Usage::

    python benchmarks/template_accuracy.py --openms ../shared/data/openms_subset
    python benchmarks/template_accuracy.py --phantom 2 --space MNI152NLin2009aSym:res-1 \\
        --work /tmp/template-work --json results.json

Per scan it runs the anatomical preprocessing (``init_anat_preproc_wf``, Nipype
``Linear``; what a participant run registers: the T1w brain and the brain mask
on the 1 mm model grid), then registers to the template twice, affine only and
affine + B-spline (as demist does), and reports:

- ``dice_affine`` / ``dice``: Dice of the template's brain mask and the
  subject's brain mask resampled into template space (the issue-17 measure);
- phantom only: ``truth_dice``, the same with the phantom's *true* brain mask
  (so a wrong demist mask cannot flatter the registration);
- ``seconds_affine`` / ``seconds``: wall time of each registration (the
  cost a template space adds to a participant run, besides resampling).

The template is TemplateFlow's when its files are present, else (as on a
machine without network) ``MNI152NLin2009aSym`` from nilearn; ``--space``
naming another template without files stops with its name.
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


def preprocess(t1w: Path, flair: Path, work: Path) -> dict[str, Path]:
    """The model-grid T1w brain and brain mask that a participant run registers."""
    from nipype.interfaces import utility as niu
    from nipype.pipeline import engine as pe

    from demist_bids.workflows.anatomical import init_anat_preproc_wf

    wf = init_anat_preproc_wf()
    wf.base_dir = str(work)
    wf.config["execution"] = {**wf.config.get("execution", {}), "crashdump_dir": str(work)}
    wf.inputs.inputnode.t1w = str(Path(t1w).absolute())
    wf.inputs.inputnode.flair = str(Path(flair).absolute())
    # Nipype drops identity nodes from the graph it runs: keep the two outputs in a Merge
    keep = pe.Node(niu.Merge(2), name="keep")
    wf.connect(wf.get_node("outputnode"), "t1w_preproc", keep, "in1")
    wf.connect(wf.get_node("outputnode"), "brain_mask", keep, "in2")
    ran = wf.run(plugin="Linear")
    t1w_file, mask_file = next(n for n in ran.nodes() if n.name == "keep").result.outputs.out
    return {"t1w_preproc": Path(t1w_file), "brain_mask": Path(mask_file)}


def measure(case: str, files: dict[str, Path], template, truth_mask: Path | None = None) -> dict:
    """Register affine-only and affine + B-spline; Dice of the masks in template space."""
    from demist_bids.preprocessing.template_registration import (
        dice, register_to_template, to_template)

    t1w, mask = nib.load(files["t1w_preproc"]), nib.load(files["brain_mask"])
    row = {"case": case, "template": f"{template.name}:res-{template.res}"}
    for label, nonlinear in (("_affine", False), ("", True)):
        start = time.perf_counter()
        result = register_to_template(t1w, mask, template, nonlinear=nonlinear)
        row[f"seconds{label}"] = time.perf_counter() - start
        warped = to_template(mask, template, result.forward, order=0, dtype=np.uint8)
        row[f"dice{label}"] = dice(warped.dataobj, template.brain_mask.dataobj)
        if truth_mask is not None:
            truth = to_template(nib.load(truth_mask), template, result.forward, order=0,
                                dtype=np.uint8)
            row[f"truth_dice{label}"] = dice(truth.dataobj, template.brain_mask.dataobj)
    return row


def openms(root: Path, work: Path, template) -> list[dict]:
    scans = [("sub-cs07", root / "sub-cs07" / "anat" / "sub-cs07")]
    scans += [(f"sub-long01 ses-{s}", root / "sub-long01" / f"ses-{s}" / "anat"
               / f"sub-long01_ses-{s}") for s in (1, 2)]
    rows = []
    for case, prefix in scans:
        t1w, flair = Path(f"{prefix}_T1w.nii.gz"), Path(f"{prefix}_FLAIR.nii.gz")
        if not t1w.is_file():
            print(f"skipped {case}: {t1w} is absent")
            continue
        files = preprocess(t1w, flair, work / f"work-{case.replace(' ', '_')}")
        rows.append(measure(case, files, template))
    return rows


def phantom(n_subjects: int, work: Path, seed: int, template) -> list[dict]:
    from demist_bids.phantom import generate_cohort

    rows = []
    scans = generate_cohort(work / "phantom", subjects=n_subjects, seed=seed, overwrite=True)
    for scan in scans:
        files = preprocess(scan.t1w, scan.flair, work / f"work-phantom-{scan.subject}")
        rows.append(measure(f"phantom sub-{scan.subject}", files, template,
                            truth_mask=scan.brain_mask))
    return rows


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests read its defaults)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--openms", type=Path, help="the openms_subset folder (../shared/data)")
    parser.add_argument("--phantom", type=int, default=0, metavar="N", help="phantom subjects")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--space", default="MNI152NLin2009aSym:res-1",
                        help="output space, as --output-spaces takes it")
    parser.add_argument("--threads", type=int, default=2, help="SimpleITK threads")
    parser.add_argument("--work", type=Path,
                        help="work folder (default: a temporary one, removed at exit)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    return parser


def main(argv=None) -> None:
    import SimpleITK as sitk

    from demist_bids.preprocessing.templates import check_space_template, load_space_template
    from demist_bids.utils.spaces import parse_output_spaces

    opts = build_parser().parse_args(argv)
    space, = parse_output_spaces([opts.space])
    check_space_template(space.name, space.res)
    template = load_space_template(space.name, space.res)
    print(f"template {space}: {template.source}")
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(opts.threads)
    given = contextlib.nullcontext(opts.work) if opts.work else \
        tempfile.TemporaryDirectory(prefix="template-accuracy-")
    with given as work:
        Path(work).mkdir(parents=True, exist_ok=True)
        rows = (phantom(opts.phantom, Path(work), opts.seed, template) if opts.phantom else [])
        rows += openms(opts.openms, Path(work), template) if opts.openms else []
    print(f"{'case':<22} {'dice_affine':>11} {'dice':>6} {'truth_dice':>10} {'seconds':>7}")
    for row in rows:
        truth = row.get("truth_dice")
        print(f"{row['case']:<22} {row['dice_affine']:>11.4f} {row['dice']:>6.4f} "
              f"{'' if truth is None else f'{truth:.4f}':>10} {row['seconds']:>7.1f}")
    if opts.json:
        opts.json.write_text(json.dumps(rows, indent=2))
    if rows:
        print(f"template={template.name}:res-{template.res} "
              f"min_dice={min(r['dice'] for r in rows):.4f} "
              f"min_dice_affine={min(r['dice_affine'] for r in rows):.4f} "
              f"max_seconds={max(r['seconds'] for r in rows):.1f}")


if __name__ == "__main__":
    main()
