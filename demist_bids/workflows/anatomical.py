"""Anatomical preprocessing: raw T1w + FLAIR to what the DEMIST model reads.

Both contrasts end on one 1 mm RAS grid aligned to the T1w in world space,
bias-corrected, brain-masked and scaled to [0, 1]; the native-grid outputs and
the rigid FLAIR->T1w transform let results go back to the subject's T1w.
"""

from __future__ import annotations

DESC_VALIDATE = """\
Anatomical preprocessing used *demist* {version}, built with Nipype [@nipype].
The T1-weighted (T1w) and FLAIR images were checked for consistent NIfTI headers
(following *niworkflows*' `ValidateImage`), single-volume 4D images were
squeezed, and non-finite and negative intensities were set to zero. """

DESC_N4 = """\
Intensity non-uniformity was corrected in both images with N4 [@n4], as
implemented in SimpleITK [@simpleitk] (field fitted at {shrink_mm:g} mm). """

DESC_COREG = """\
The FLAIR was aligned to the T1w with a rigid (6 degrees of freedom) transform
maximising Mattes mutual information [@mattes] over a three-level pyramid
(SimpleITK). Both images were resampled (linear interpolation) onto one
{voxel_mm:g} mm isotropic RAS grid aligned to the T1w, in a single interpolation
step per image. """

DESC_MASK = """\
A brain mask was obtained by affine registration of the MNI152 template's brain
mask [@mni152nlin2009] (TemplateFlow [@templateflow] `MNI152NLin2009cAsym` where
available, else the ICBM 2009a template shipped with *nilearn* [@nilearn]) to the
bias-corrected T1w, started from several head sizes; with the skull-stripped
nilearn template, the registered mask's boundary was then redrawn within 6 mm
from the T1w intensities (threshold, morphological opening, closing); images found to be already skull-stripped kept their own
brain support, and a brain mask from another pipeline was used when given. Brain
tissue was labelled as grey matter, white matter or cerebrospinal fluid with a
three-class Gaussian mixture model of T1w intensity [@scikit-learn]. """

DESC_SCALE = """\
Finally, each contrast was linearly scaled to [0, 1] between its 0th and
99.5th intensity percentiles inside the brain mask, the input convention of DEMIST. """


def init_anat_preproc_wf(
    *,
    omp_nthreads: int = 1,
    voxel_mm: float = 1.0,
    mask_outputs: bool = True,
    min_flair_coverage: float | None = None,
    name: str = "anat_preproc_wf",
):
    """Build the anatomical preprocessing workflow.

    Workflow Graph
        .. workflow::
            :graph2use: orig
            :simple_form: yes

            from demist_bids.workflows.anatomical import init_anat_preproc_wf
            wf = init_anat_preproc_wf()

    Parameters
    ----------
    omp_nthreads : :obj:`int`
        Threads for the SimpleITK steps (each node's ``n_procs``).
    voxel_mm : :obj:`float`
        Voxel size of the model grid (1 mm for DEMIST; tests use coarser grids).
    mask_outputs : :obj:`bool`
        Zero ``t1w_preproc``/``flair_preproc`` outside the brain, so that raw
        and skull-stripped inputs give the model the same kind of image.
    min_flair_coverage : :obj:`float` or None
        Smallest fraction of the brain the FLAIR must cover (default
        :data:`demist_bids.preprocessing.MIN_FLAIR_COVERAGE`); below it the QC
        node raises :class:`~demist_bids.exceptions.BadDataError` naming the FLAIR.
    name : :obj:`str`
        Workflow name.

    Inputs
    ------
    t1w, flair
        Raw image paths.
    brain_mask
        Optional brain mask from another pipeline (leave undefined when absent).

    Outputs
    -------
    t1w_preproc, flair_preproc
        float32 in [0, 1] on the model grid.
    brain_mask, dseg
        uint8 mask and tissue labels (1 GM, 2 WM, 3 CSF) on the model grid.
    t1w_native, brain_mask_native, dseg_native
        The validated T1w and the mask and labels on its native grid.
    t1w_biascorr, flair_biascorr
        Each validated contrast bias-corrected (N4), on its own native grid.
    flair_to_t1w_xfm
        ITK rigid transform (T1w points -> FLAIR points, LPS).
    qc
        JSON with registration_cost, brain_mask_volume_ml, snr_t1w, snr_flair,
        template, skull_stripped_input, fixes, flair_coverage.
    t1w_flair_svg, mask_svg
        Reportlets.
    """
    from nipype.interfaces import utility as niu
    from nipype.pipeline import engine as pe
    from niworkflows.engine.workflows import LiterateWorkflow as Workflow

    from .. import __version__
    from ..interfaces.reports import MaskReportlet, RegistrationReportlet
    from ..interfaces.images import PercentileScale, ResampleToNative
    from ..interfaces.qc import AnatomicalQC
    from ..preprocessing import MIN_FLAIR_COVERAGE

    coverage = MIN_FLAIR_COVERAGE if min_flair_coverage is None else min_flair_coverage
    workflow = Workflow(name=name)
    workflow.__desc__ = DESC_VALIDATE.format(version=__version__)
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w", "flair", "brain_mask"]),
                        name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=[
        "t1w_preproc", "flair_preproc", "brain_mask", "dseg", "t1w_native", "brain_mask_native",
        "dseg_native", "t1w_biascorr", "flair_biascorr", "flair_to_t1w_xfm", "qc",
        "t1w_flair_svg", "mask_svg",
    ]), name="outputnode")

    conform_wf = _init_conform_wf(omp_nthreads=omp_nthreads, voxel_mm=voxel_mm)
    mask_wf = _init_brain_mask_wf(omp_nthreads=omp_nthreads)

    scale_t1w = pe.Node(PercentileScale(mask_output=mask_outputs), name="scale_t1w")
    scale_flair = pe.Node(PercentileScale(mask_output=mask_outputs), name="scale_flair")
    mask_native = pe.Node(ResampleToNative(interpolation="nearest"), name="mask_native")
    dseg_native = pe.Node(ResampleToNative(interpolation="nearest"), name="dseg_native")
    qc = pe.Node(AnatomicalQC(min_flair_coverage=coverage), name="qc")
    mask_rpt = pe.Node(MaskReportlet(), name="mask_rpt", mem_gb=0.5)
    coreg_rpt = pe.Node(RegistrationReportlet(), name="coreg_rpt", mem_gb=0.5)

    # fmt: off
    workflow.connect([
        (inputnode, conform_wf, [("t1w", "inputnode.t1w"), ("flair", "inputnode.flair")]),
        (inputnode, mask_wf, [("brain_mask", "inputnode.in_mask")]),
        (conform_wf, mask_wf, [("outputnode.t1w_grid", "inputnode.t1w"),
                               ("outputnode.t1w_native", "inputnode.t1w_native"),
                               ("outputnode.t1w_fov", "inputnode.t1w_fov")]),
        (conform_wf, scale_t1w, [("outputnode.t1w_grid", "in_file")]),
        (conform_wf, scale_flair, [("outputnode.flair_grid", "in_file")]),
        (mask_wf, scale_t1w, [("outputnode.brain_mask", "brain_mask")]),
        (mask_wf, scale_flair, [("outputnode.brain_mask", "brain_mask")]),
        (conform_wf, mask_native, [("outputnode.t1w_native", "reference")]),
        (conform_wf, dseg_native, [("outputnode.t1w_native", "reference")]),
        (mask_wf, mask_native, [("outputnode.brain_mask", "in_file")]),
        (mask_wf, dseg_native, [("outputnode.dseg", "in_file")]),
        (inputnode, qc, [("flair", "flair_source")]),
        (conform_wf, qc, [("outputnode.t1w_grid", "t1w"),
                          ("outputnode.flair_grid", "flair"),
                          ("outputnode.flair_fov", "flair_fov"),
                          ("outputnode.registration_cost", "registration_cost"),
                          ("outputnode.t1w_fixes", "t1w_fixes"),
                          ("outputnode.flair_fixes", "flair_fixes")]),
        (mask_wf, qc, [("outputnode.brain_mask", "brain_mask"),
                       ("outputnode.dseg", "dseg"),
                       ("outputnode.template", "template"),
                       ("outputnode.skull_stripped", "skull_stripped")]),
        (conform_wf, mask_rpt, [("outputnode.t1w_grid", "background")]),
        (mask_wf, mask_rpt, [("outputnode.brain_mask", "mask")]),
        (conform_wf, coreg_rpt, [("outputnode.t1w_grid", "t1w"),
                                 ("outputnode.flair_grid", "flair")]),
        (mask_wf, coreg_rpt, [("outputnode.dseg", "dseg")]),
        (scale_t1w, outputnode, [("out_file", "t1w_preproc")]),
        (scale_flair, outputnode, [("out_file", "flair_preproc")]),
        (mask_wf, outputnode, [("outputnode.brain_mask", "brain_mask"),
                               ("outputnode.dseg", "dseg")]),
        (conform_wf, outputnode, [("outputnode.t1w_native", "t1w_native"),
                                  ("outputnode.t1w_biascorr", "t1w_biascorr"),
                                  ("outputnode.flair_biascorr", "flair_biascorr"),
                                  ("outputnode.flair_to_t1w_xfm", "flair_to_t1w_xfm")]),
        (mask_native, outputnode, [("out_file", "brain_mask_native")]),
        (dseg_native, outputnode, [("out_file", "dseg_native")]),
        (qc, outputnode, [("out_file", "qc")]),
        (mask_rpt, outputnode, [("out_report", "mask_svg")]),
        (coreg_rpt, outputnode, [("out_report", "t1w_flair_svg")]),
    ])
    # fmt: on
    return workflow


def _init_conform_wf(*, omp_nthreads: int, voxel_mm: float, name: str = "conform_wf"):
    """Validate, N4-correct and co-register T1w and FLAIR onto the model grid."""
    from nipype.interfaces import utility as niu
    from nipype.pipeline import engine as pe
    from niworkflows.engine.workflows import LiterateWorkflow as Workflow

    from ..interfaces.images import ResampleToGrid, ValidateAnatomical
    from ..interfaces.registration import N4BiasCorrection, RigidRegistration

    workflow = Workflow(name=name)
    shrink_mm = N4BiasCorrection.input_spec().shrink_mm
    workflow.__desc__ = DESC_N4.format(shrink_mm=shrink_mm) + DESC_COREG.format(voxel_mm=voxel_mm)
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w", "flair"]), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=[
        "t1w_native", "t1w_grid", "flair_grid", "t1w_fov", "flair_fov", "flair_to_t1w_xfm",
        "registration_cost", "t1w_fixes", "flair_fixes", "t1w_biascorr", "flair_biascorr",
    ]), name="outputnode")

    validate_t1w = pe.Node(ValidateAnatomical(), name="validate_t1w")
    validate_flair = pe.Node(ValidateAnatomical(), name="validate_flair")
    # peak memory of a whole 1 mm subject run in one process is ~0.5 GB (measured)
    n4_t1w = pe.Node(N4BiasCorrection(num_threads=omp_nthreads), name="n4_t1w",
                     n_procs=omp_nthreads, mem_gb=0.5)
    n4_flair = pe.Node(N4BiasCorrection(num_threads=omp_nthreads), name="n4_flair",
                       n_procs=omp_nthreads, mem_gb=0.5)
    coreg = pe.Node(RigidRegistration(num_threads=omp_nthreads), name="flair_to_t1w",
                    n_procs=omp_nthreads, mem_gb=0.5)
    t1w_to_grid = pe.Node(ResampleToGrid(voxel_mm=voxel_mm, num_threads=omp_nthreads),
                          name="t1w_to_grid", n_procs=omp_nthreads, mem_gb=0.5)
    flair_to_grid = pe.Node(ResampleToGrid(num_threads=omp_nthreads), name="flair_to_grid",
                            n_procs=omp_nthreads, mem_gb=0.5)

    # fmt: off
    workflow.connect([
        (inputnode, validate_t1w, [("t1w", "in_file")]),
        (inputnode, validate_flair, [("flair", "in_file")]),
        (validate_t1w, n4_t1w, [("out_file", "in_file")]),
        (validate_flair, n4_flair, [("out_file", "in_file")]),
        (n4_t1w, coreg, [("out_file", "fixed_image")]),
        (n4_flair, coreg, [("out_file", "moving_image")]),
        (n4_t1w, t1w_to_grid, [("out_file", "in_file")]),
        (n4_flair, flair_to_grid, [("out_file", "in_file")]),
        (t1w_to_grid, flair_to_grid, [("out_file", "reference")]),
        (coreg, flair_to_grid, [("out_transform", "transform")]),
        (validate_t1w, outputnode, [("out_file", "t1w_native"), ("fixes", "t1w_fixes")]),
        (validate_flair, outputnode, [("fixes", "flair_fixes")]),
        (n4_t1w, outputnode, [("out_file", "t1w_biascorr")]),
        (n4_flair, outputnode, [("out_file", "flair_biascorr")]),
        (t1w_to_grid, outputnode, [("out_file", "t1w_grid"), ("fov_mask", "t1w_fov")]),
        (flair_to_grid, outputnode, [("out_file", "flair_grid"), ("fov_mask", "flair_fov")]),
        (coreg, outputnode, [("out_transform", "flair_to_t1w_xfm"),
                             ("final_metric", "registration_cost")]),
    ])
    # fmt: on
    return workflow


def _init_brain_mask_wf(*, omp_nthreads: int, name: str = "brain_mask_wf"):
    """Brain mask (given, skull-stripped support, or template) and tissue labels."""
    from nipype.interfaces import utility as niu
    from nipype.pipeline import engine as pe
    from niworkflows.engine.workflows import LiterateWorkflow as Workflow

    from ..interfaces.masks import BrainMask, TissueSegmentation

    workflow = Workflow(name=name)
    workflow.__desc__ = DESC_MASK + DESC_SCALE
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w", "t1w_native", "t1w_fov", "in_mask"]),
                        name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=[
        "brain_mask", "dseg", "template", "skull_stripped"]), name="outputnode")
    brain_mask = pe.Node(BrainMask(num_threads=omp_nthreads), name="brain_mask",
                         n_procs=omp_nthreads, mem_gb=0.5)
    tissues = pe.Node(TissueSegmentation(), name="tissues", mem_gb=0.5)

    # fmt: off
    workflow.connect([
        (inputnode, brain_mask, [("t1w", "in_file"), ("t1w_native", "native_file"),
                                 ("t1w_fov", "fov_mask"), ("in_mask", "in_mask")]),
        (inputnode, tissues, [("t1w", "in_file")]),
        (brain_mask, tissues, [("out_mask", "brain_mask")]),
        (brain_mask, outputnode, [("out_mask", "brain_mask"), ("template", "template"),
                                  ("skull_stripped", "skull_stripped")]),
        (tissues, outputnode, [("out_dseg", "dseg")]),
    ])
    # fmt: on
    return workflow
