"""One T1w/FLAIR pair to a PSR map on the T1w's grid: the pipeline every entry point runs.

The participant level (:func:`~demist_bids.workflows.base.init_single_subject_wf`)
adds its reportlets and the commit into the derivatives dataset around it; the
Python API (:func:`demist_bids.api.synthesize_pair`) and ``demist-synth`` run it
alone. Keeping it in one factory is what makes their maps identical.
"""

from __future__ import annotations

from pathlib import Path

DESC_FLAIR = """\

The bias-corrected FLAIR was also resampled onto the native T1w grid (B-spline,
through the same rigid transform) and saved with the transform, for other tools. """


def init_synthesis_wf(
    *,
    model_dir: Path,
    sampler: str = "auto",
    steps: int = 0,
    samples: int = 1,
    seed: int = 42,
    device: str = "cpu",
    omp_nthreads: int = 1,
    name: str = "synthesis_wf",
    sampling=None,
):
    """Preprocess, synthesize, and bring the results back to the native T1w grid.

    Workflow Graph
        .. workflow::
            :graph2use: orig
            :simple_form: yes

            from demist_bids.workflows.synthesis import init_synthesis_wf
            wf = init_synthesis_wf(model_dir="model", samples=2)

    Parameters
    ----------
    model_dir : :obj:`~pathlib.Path`
        The demist model directory (checked beforehand).
    sampler, steps, samples, seed, device
        Sampler settings (``auto``/0: the model's stored sampler and steps).
    omp_nthreads : :obj:`int`
        Threads per node.
    sampling : :class:`~demist_bids.inference.student.SamplingChoice` or None
        The sampler the caller resolved, holding the parsed configuration of the
        model it loads (:func:`~demist_bids.inference.student.resolve_sampling`
        with the configurations :func:`~demist_bids.models.validation.check_model`
        read): then the node loads that directory with that configuration and
        reads no ``config.json``; ``model_dir``, ``sampler`` and ``steps`` give way.

    Inputs
    ------
    t1w, flair
        Raw image paths.
    brain_mask
        Optional brain mask from another pipeline.

    Outputs
    -------
    psr, psr_std, brain_mask, dseg, t1w_preproc, flair_preproc, flair_to_t1w_xfm
        On the native T1w grid, named as the derivatives' keys
        (:data:`~demist_bids.derivatives.outputs.OUTPUTS`); ``psr_std`` only
        with ``samples > 1``.
    psr_model, psr_std_model, t1w_model, brain_mask_model
        The same on the model's 1 mm grid (reportlets, ``--output-spaces model``).
    qc, synthesis_info
        JSON files: preprocessing QC and sampler settings/runtime.
    t1w_flair_svg, mask_svg
        Preprocessing reportlets.
    """
    from nipype.interfaces import utility as niu
    from nipype.pipeline import engine as pe
    from niworkflows.engine.workflows import LiterateWorkflow as Workflow

    from demist_bids.interfaces.images import ResampleToGrid, ResampleToNative
    from demist_bids.interfaces.registration import ExportTransform
    from demist_bids.interfaces.synthesis import Synthesize
    from demist_bids.workflows.anatomical import init_anat_preproc_wf

    wf = Workflow(name=name)
    wf.__postdesc__ = DESC_FLAIR
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w", "flair", "brain_mask"]),
                        name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=[
        "psr", "psr_std", "brain_mask", "dseg", "t1w_preproc", "flair_preproc",
        "flair_to_t1w_xfm", "psr_model", "psr_std_model", "t1w_model", "brain_mask_model",
        "qc", "synthesis_info", "t1w_flair_svg", "mask_svg",
    ]), name="outputnode")

    anat_wf = init_anat_preproc_wf(omp_nthreads=omp_nthreads)
    if sampling is not None and sampling.config is not None:
        chosen = {"model_dir": str(sampling.model_dir), "sampler": sampling.sampler,
                  "steps": sampling.steps, "student": sampling.student,
                  "model_config": sampling.config.to_dict()}
    else:  # resolved (and config.json read) in the node
        chosen = {"model_dir": str(model_dir), "sampler": sampler, "steps": steps}
    synth = pe.Node(
        Synthesize(**chosen, samples=samples, seed=seed, device=device,
                   use_gpu=device.startswith("cuda"), num_threads=omp_nthreads),
        name="synthesize", n_procs=omp_nthreads, mem_gb=4.0,
    )
    psr_native = pe.Node(ResampleToNative(interpolation="linear"), name="psr_native")
    flair_native = pe.Node(ResampleToGrid(interpolation="bspline", num_threads=omp_nthreads),
                           name="flair_native", n_procs=omp_nthreads, mem_gb=0.5)
    export_xfm = pe.Node(ExportTransform(), name="export_xfm")

    # fmt: off
    wf.connect([
        (inputnode, anat_wf, [("t1w", "inputnode.t1w"), ("flair", "inputnode.flair"),
                              ("brain_mask", "inputnode.brain_mask")]),
        (anat_wf, synth, [("outputnode.t1w_preproc", "t1w"),
                          ("outputnode.flair_preproc", "flair"),
                          ("outputnode.brain_mask", "brain_mask")]),
        (synth, psr_native, [("psr", "in_file")]),
        (anat_wf, psr_native, [("outputnode.t1w_native", "reference")]),
        (anat_wf, flair_native, [("outputnode.flair_biascorr", "in_file"),
                                 ("outputnode.t1w_biascorr", "reference"),
                                 ("outputnode.flair_to_t1w_xfm", "transform")]),
        (anat_wf, export_xfm, [("outputnode.flair_to_t1w_xfm", "in_file")]),
        (psr_native, outputnode, [("out_file", "psr")]),
        (flair_native, outputnode, [("out_file", "flair_preproc")]),
        (export_xfm, outputnode, [("out_file", "flair_to_t1w_xfm")]),
        (synth, outputnode, [("psr", "psr_model"), ("psr_std", "psr_std_model"),
                             ("info", "synthesis_info")]),
        (anat_wf, outputnode, [("outputnode.brain_mask_native", "brain_mask"),
                               ("outputnode.dseg_native", "dseg"),
                               ("outputnode.t1w_biascorr", "t1w_preproc"),
                               ("outputnode.t1w_preproc", "t1w_model"),
                               ("outputnode.brain_mask", "brain_mask_model"),
                               ("outputnode.qc", "qc"),
                               ("outputnode.t1w_flair_svg", "t1w_flair_svg"),
                               ("outputnode.mask_svg", "mask_svg")]),
    ])
    # fmt: on
    if samples > 1:
        std_native = pe.Node(ResampleToNative(interpolation="linear"), name="std_native")
        wf.connect([
            (synth, std_native, [("psr_std", "in_file")]),
            (anat_wf, std_native, [("outputnode.t1w_native", "reference")]),
            (std_native, outputnode, [("out_file", "psr_std")]),
        ])  # fmt: skip
    return wf
