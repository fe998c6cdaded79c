"""The training cohort on disk: which scans have a measured PSR map, preprocessed.

This is the BIDS- and Nipype-facing half of training (no torch here):

1. :func:`find_training_scans` asks pybids (:func:`demist_bids.bids.query.collect_inputs`)
   for every T1w+FLAIR pair and keeps those with a measured ``*_PSRmap``;
2. :func:`init_train_preproc_wf` runs the participant level's own anatomical
   preprocessing (:func:`~demist_bids.workflows.anatomical.init_anat_preproc_wf`)
   for every scan inside one workflow whose cache lives in the work directory,
   and brings the measured PSR map and the lesion mask from the native T1w grid
   onto the model's 1 mm grid (world-space resampling, identity transform:
   both grids are aligned to the T1w);
3. :func:`preprocess_cohort` runs it and returns the files as
   :class:`VolumePaths`.

Training therefore sees exactly the inputs the participant level will give the
model at inference time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from nipype.interfaces.base import (BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec,
                                    traits)

from demist_bids.exceptions import MissingInputError
from demist_bids.preprocessing.tissues import WM as WM_LABEL  # the dseg's white matter (2, BIDS order)
from demist_bids.utils.image_check import DEFAULT_MAX_VOXELS, check_image_files

LOGGER = logging.getLogger("demist.train")


@dataclass(frozen=True)
class VolumePaths:
    """Files of one preprocessed training scan (1 mm grid)."""

    name: str
    t1w: Path
    flair: Path
    brain_mask: Path
    psr: Path
    lesion_mask: Path | None = None
    wm_mask: Path | None = None


def find_training_scans(
    bids_dir: Path,
    *,
    work_dir: Path,
    participant_label=(),
    session_label=(),
    bids_filter=None,
    derivatives=None,
    psr_derivatives: Path | None = None,
    max_voxels: int = DEFAULT_MAX_VOXELS,
):
    """T1w+FLAIR inputs that also have a measured PSR map, each image checked before use.

    Raises:
        MissingInputError: no scan has a PSR map (nothing to train on).
        BadDataError: an image is truncated, oversized or unreadable (names the file).
    """
    from demist_bids.bids.query import collect_inputs

    found, missing = collect_inputs(
        bids_dir,
        work_dir=work_dir,
        participant_label=list(participant_label),
        session_label=list(session_label),
        bids_filter=bids_filter,
        derivatives=derivatives or {},
        psr_derivatives=psr_derivatives,
    )
    for item in missing:
        LOGGER.warning(item.message)
    with_psr = [item for item in found if item.psr is not None]
    for item in found:
        if item.psr is None:
            LOGGER.warning("%s has no *_PSRmap image; it is not used for training", item.bids_name)
    if not with_psr:
        where = psr_derivatives or Path(bids_dir) / "derivatives"
        raise MissingInputError(
            f"no subject has a measured PSR map (*_PSRmap.nii[.gz]) in {where}; "
            "point --psr-derivatives at the derivatives dataset that holds them"
        )
    for item in with_psr:
        check_image_files([item.t1w, item.flair, item.psr, item.brain_mask, item.lesion_mask],
                          max_voxels)
    LOGGER.info("Training cohort: %d scans of %d subjects with a PSR map",
                len(with_psr), len({i.subject for i in with_psr}))
    return with_psr


# -- the resampling step -----------------------------------------------------------


def resample_onto(moving: Path, reference: Path, out_file: Path, *, labels: bool) -> Path:
    """Resample ``moving`` onto ``reference``'s grid in world space and write ``out_file``."""
    import nibabel as nib
    import numpy as np

    from demist_bids.preprocessing.grids import resample_like

    img = resample_like(
        nib.load(str(moving)), nib.load(str(reference)),
        order=0 if labels else 1, dtype=np.uint8 if labels else np.float32,
    )
    if labels:
        img = nib.Nifti1Image((np.asanyarray(img.dataobj) > 0).astype(np.uint8), img.affine)
    nib.save(img, str(out_file))
    return Path(out_file)


def white_matter_mask(dseg: Path, out_file: Path, *, wm_label: int = WM_LABEL) -> Path:
    """Binary white-matter mask from a tissue segmentation."""
    import nibabel as nib
    import numpy as np

    img = nib.load(str(dseg))
    mask = (np.asanyarray(img.dataobj) == wm_label).astype(np.uint8)
    nib.save(nib.Nifti1Image(mask, img.affine), str(out_file))
    return Path(out_file)


class _ModelGridTargetsInputSpec(BaseInterfaceInputSpec):
    t1w = File(exists=True, mandatory=True, desc="preprocessed T1w: defines the model's 1 mm grid")
    flair = File(exists=True, mandatory=True, desc="preprocessed FLAIR (passed through)")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask on the model grid (passed through)")
    psr = File(exists=True, mandatory=True, desc="measured PSR map on its native grid")
    lesion_mask = File(exists=True, desc="lesion mask on its native grid")
    dseg = File(exists=True, desc="tissue segmentation on the model grid")
    wm_label = traits.Int(WM_LABEL, usedefault=True, desc="white-matter label in dseg")


class _ModelGridTargetsOutputSpec(TraitedSpec):
    t1w = File(exists=True)
    flair = File(exists=True)
    brain_mask = File(exists=True)
    psr = File(exists=True, desc="PSR on the model grid (PSR units)")
    lesion_mask = File(desc="lesion mask on the model grid")
    wm_mask = File(desc="white-matter mask on the model grid")


class ModelGridTargets(SimpleInterface):
    """Bring the measured PSR map (and lesion mask) onto the model's 1 mm grid.

    The preprocessed images pass through so that one node's outputs list every
    file of a training scan (Nipype drops identity nodes from the run graph).
    """

    input_spec = _ModelGridTargetsInputSpec
    output_spec = _ModelGridTargetsOutputSpec

    def _run_interface(self, runtime):
        cwd = Path(runtime.cwd)
        for name in ("t1w", "flair", "brain_mask"):
            self._results[name] = getattr(self.inputs, name)
        self._results["psr"] = str(
            resample_onto(self.inputs.psr, self.inputs.t1w, cwd / "psr_1mm.nii.gz", labels=False)
        )
        if self.inputs.lesion_mask:
            self._results["lesion_mask"] = str(resample_onto(
                self.inputs.lesion_mask, self.inputs.t1w, cwd / "lesion_1mm.nii.gz", labels=True
            ))
        if self.inputs.dseg:
            self._results["wm_mask"] = str(
                white_matter_mask(self.inputs.dseg, cwd / "wm_1mm.nii.gz", wm_label=self.inputs.wm_label)
            )
        return runtime


# -- the workflow --------------------------------------------------------------------


def _node_name(bids_name: str) -> str:
    return bids_name.replace("-", "").replace("_", "")


def init_train_preproc_wf(scans, *, omp_nthreads: int, name: str = "train_preproc_wf"):
    """Preprocess every training scan and bring its targets onto the model grid.

    Parameters
    ----------
    scans : list of :class:`~demist_bids.bids.query.AnatInputs`
        Scans with a PSR map.
    omp_nthreads : int
        Threads per preprocessing node.

    Outputs
    -------
    One ``targets_<scan>`` node per scan (:class:`ModelGridTargets`) and one
    ``anat_<scan>`` preprocessing workflow; :func:`preprocess_cohort` reads them.
    """
    from nipype.pipeline import engine as pe

    from demist_bids.workflows.anatomical import init_anat_preproc_wf

    workflow = pe.Workflow(name=name)
    for scan in scans:
        key = _node_name(scan.bids_name)
        anat_wf = init_anat_preproc_wf(omp_nthreads=omp_nthreads, name=f"anat_{key}")
        anat_wf.inputs.inputnode.t1w = str(scan.t1w)
        anat_wf.inputs.inputnode.flair = str(scan.flair)
        if scan.brain_mask is not None:
            anat_wf.inputs.inputnode.brain_mask = str(scan.brain_mask)
        targets = pe.Node(ModelGridTargets(psr=str(scan.psr)), name=f"targets_{key}")
        if scan.lesion_mask is not None:
            targets.inputs.lesion_mask = str(scan.lesion_mask)
        workflow.connect([
            (anat_wf, targets, [("outputnode.t1w_preproc", "t1w"),
                                ("outputnode.flair_preproc", "flair"),
                                ("outputnode.brain_mask", "brain_mask"),
                                ("outputnode.dseg", "dseg")]),
        ])  # fmt: skip
    return workflow


def _run_one(scan, *, work_dir: Path, omp_nthreads: int, nprocs: int, plugin: str, plugin_args: dict):
    workflow = init_train_preproc_wf([scan], omp_nthreads=omp_nthreads, name=f"train_{_node_name(scan.bids_name)}_wf")
    workflow.base_dir = str(Path(work_dir).absolute())
    workflow.config["execution"].update(
        {"crashdump_dir": str(Path(work_dir).absolute() / "crash"), "remove_unnecessary_outputs": False}
    )
    args = {"n_procs": max(nprocs, 1), **plugin_args}
    if plugin == "Linear" or args["n_procs"] == 1:
        graph = workflow.run(plugin="Linear")
    else:
        graph = workflow.run(plugin=plugin, plugin_args=args)
    key = _node_name(scan.bids_name)
    targets = next(n for n in graph.nodes() if n.name == f"targets_{key}").result.outputs
    return VolumePaths(
        name=scan.bids_name,
        t1w=Path(targets.t1w),
        flair=Path(targets.flair),
        brain_mask=Path(targets.brain_mask),
        psr=Path(targets.psr),
        lesion_mask=Path(targets.lesion_mask) if targets.lesion_mask else None,
        wm_mask=Path(targets.wm_mask) if targets.wm_mask else None,
    )


def preprocess_cohort(
    scans, *, work_dir: Path, omp_nthreads: int = 1, nprocs: int = 1, plugin: str = "MultiProc",
    plugin_args: dict | None = None,
) -> list[VolumePaths]:
    """Preprocess each scan (cached in ``work_dir``) and list the results.

    Scans run one at a time, each in its own workflow, so that one scan that
    fails preprocessing (a FLAIR covering too little of the brain, say) is
    reported and left out instead of stopping the whole cohort.

    Raises:
        MissingInputError: no scan could be preprocessed.
    """
    out = []
    for scan in scans:
        try:
            out.append(_run_one(scan, work_dir=work_dir, omp_nthreads=omp_nthreads, nprocs=nprocs,
                                plugin=plugin, plugin_args=dict(plugin_args or {})))
        except Exception as error:  # noqa: BLE001 - Nipype wraps every node failure
            reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
            LOGGER.warning("%s is left out of training: preprocessing failed (%s)", scan.bids_name, reason)
    if not out:
        raise MissingInputError("preprocessing failed for every training scan (see the warnings above)")
    return out
