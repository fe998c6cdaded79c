"""The participant-level Nipype graph: one sub-workflow per subject (and session).

These two factories are the only ones that read the run's :class:`Config`;
everything below them takes explicit keyword arguments.

Per subject/session::

    inputnode -> synthesis_wf (anat_preproc_wf -> synthesize -> to native grid) --+
                       |                                           +-> commit (all outputs at once)
                       +-> reportlets (registration, mask, PSR, uncertainty, lesions) --+
"""

from __future__ import annotations

from pathlib import Path

from demist_bids import __version__


def init_demist_wf(config, inputs, *, model_dir: Path, model_sha256: str, is_demo: bool,
                   card: dict, device: str, sampling=None):
    """The whole participant-level graph for the selected subjects/sessions.

    ``sampling`` is the sampler the command line resolved
    (:func:`demist_bids.cli.participant.resolve_sampler`), with the model configuration
    it parsed once: the synthesis nodes load the model with it and read no ``config.json``.
    Without it the config's ``auto``/0 is passed on and resolved in the node.
    """
    from niworkflows.engine.workflows import LiterateWorkflow as Workflow

    from demist_bids.utils.spaces import template_spaces

    wf = Workflow(name=f"demist_{__version__.replace('.', '_')}_wf")
    wf.base_dir = str(config.execution.work_dir)
    for item in inputs:
        single = init_single_subject_wf(
            item,
            bids_dir=config.execution.bids_dir,
            output_dir=config.execution.output_dir,
            log_dir=Path(config.execution.output_dir) / f"sub-{item.subject}" / "log"
            / config.execution.run_uuid,
            omp_nthreads=config.nipype.omp_nthreads,
            model_dir=model_dir, model_sha256=model_sha256, is_demo=is_demo, card=card,
            sampler=sampling.label if sampling else config.synthesis.sampler,
            steps=sampling.steps if sampling else config.synthesis.steps,
            samples=config.synthesis.samples, seed=config.seeds.master, device=device,
            output_model_grid="model" in config.execution.output_spaces, sampling=sampling,
            template_spaces=template_spaces(config.execution.output_spaces),
        )
        wf.add_nodes([single])
    return wf


def init_single_subject_wf(
    item, *, bids_dir: Path, output_dir: Path, log_dir: Path, omp_nthreads: int,
    model_dir: Path, model_sha256: str, is_demo: bool, card: dict, sampler: str, steps: int,
    samples: int, seed: int, device: str, output_model_grid: bool = False, sampling=None,
    template_spaces=(),
):
    """Preprocess, synthesize and write one subject/session (``sampling``: the resolved sampler,
    which the boilerplate names and the synthesis node runs with the parsed model configuration)."""
    from nipype.interfaces import utility as niu
    from nipype.pipeline import engine as pe
    from niworkflows.engine.workflows import LiterateWorkflow as Workflow

    from demist_bids.derivatives.sidecars import static_metadata
    from demist_bids.interfaces.derivatives import CommitDerivatives
    from demist_bids.interfaces.reports import LesionValues, MapMosaic
    from demist_bids.workflows.synthesis import init_synthesis_wf

    name = item.bids_name.replace("-", "_")
    wf = Workflow(name=f"single_subject_{name}_wf")
    wf.__desc__ = (
        f"Results included in this manuscript come from synthesis performed with *demist* "
        f"{__version__}, an implementation of DEMIST, a 3D latent diffusion model that "
        "synthesizes quantitative magnetization-transfer pool-size-ratio (PSR) maps from "
        "T1-weighted and FLAIR images [@demist].\n\n"
    )

    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w", "flair", "brain_mask"]),
                        name="inputnode")
    inputnode.inputs.t1w = str(item.t1w)
    inputnode.inputs.flair = str(item.flair)
    if item.brain_mask is not None:
        inputnode.inputs.brain_mask = str(item.brain_mask)

    synthesis_wf = init_synthesis_wf(
        model_dir=model_dir, sampler=sampler, steps=steps, samples=samples, seed=seed,
        device=device, omp_nthreads=omp_nthreads, sampling=sampling,
    )
    wf.__postdesc__ = _synthesis_desc(card=card, is_demo=is_demo, samples=samples, seed=seed,
                                      sha=model_sha256, sampling=sampling)
    psr_mosaic = pe.Node(MapMosaic(title="Synthesized PSR"), name="psr_mosaic")
    commit = pe.Node(
        CommitDerivatives(
            output_dir=str(output_dir), subject=item.subject, session=item.session or "",
            metadata=static_metadata(bids_dir=Path(bids_dir), t1w=item.t1w, flair=item.flair,
                                     model_dir=model_dir, model_sha256=model_sha256,
                                     is_demo=is_demo, card=card,
                                     t1w_metadata=item.t1w_metadata,
                                     flair_metadata=item.flair_metadata),
        ),
        name="commit", run_without_submitting=True,
    )
    lesions = pe.Node(LesionValues(), name="lesion_values")
    if item.lesion_mask is not None:
        lesions.inputs.lesion_mask = str(item.lesion_mask)

    reportlet_names = ["registration", "brainmask", "psr"]
    n_templates = len({space.name for space in template_spaces})
    merge_reportlets = pe.Node(niu.Merge((4 if samples > 1 else 3) + n_templates),
                               name="merge_reportlets", run_without_submitting=True)
    native = ["psr", "brain_mask", "dseg", "t1w_preproc", "flair_preproc", "flair_to_t1w_xfm"]
    wf.connect([
        (inputnode, synthesis_wf, [("t1w", "inputnode.t1w"), ("flair", "inputnode.flair"),
                                   ("brain_mask", "inputnode.brain_mask")]),
        (synthesis_wf, psr_mosaic, [("outputnode.t1w_model", "background"),
                                    ("outputnode.brain_mask_model", "brain_mask"),
                                    ("outputnode.psr_model", "overlay")]),
        (synthesis_wf, lesions, [("outputnode.psr", "psr"), ("outputnode.dseg", "dseg")]),
        (synthesis_wf, merge_reportlets, [("outputnode.t1w_flair_svg", "in1"),
                                          ("outputnode.mask_svg", "in2")]),
        (psr_mosaic, merge_reportlets, [("out_report", "in3")]),
        (synthesis_wf, commit, [(f"outputnode.{key}", key) for key in native]
         + [("outputnode.qc", "qc"), ("outputnode.synthesis_info", "synthesis_info")]),
        (lesions, commit, [("out_json", "lesion_values")]),
        (merge_reportlets, commit, [("out", "reportlets")]),
    ])
    if samples > 1:
        std_mosaic = pe.Node(MapMosaic(title="Uncertainty (SD across samples)", cmap="viridis"),
                             name="std_mosaic")
        reportlet_names.append("uncertainty")
        wf.connect([
            (synthesis_wf, commit, [("outputnode.psr_std", "psr_std")]),
            (synthesis_wf, std_mosaic, [("outputnode.t1w_model", "background"),
                                        ("outputnode.brain_mask_model", "brain_mask"),
                                        ("outputnode.psr_std_model", "overlay")]),
            (std_mosaic, merge_reportlets, [("out_report", "in4")]),
        ])
    if template_spaces:  # --output-spaces with templates: registration, maps, transforms
        from demist_bids.workflows.template import connect_template_spaces

        reportlet_names += connect_template_spaces(
            wf, template_spaces, synthesis_wf=synthesis_wf, commit=commit,
            merge_reportlets=merge_reportlets, first_reportlet=len(reportlet_names) + 1,
            samples=samples, omp_nthreads=omp_nthreads)
    commit.inputs.reportlet_names = reportlet_names
    if output_model_grid:
        wf.connect([(synthesis_wf, commit, [("outputnode.psr_model", "psr_model")])])
    # Nipype reads crash settings per node: give every node of this subject its log folder.
    for node in wf._get_all_nodes():
        node.config = {**(node.config or {}), "execution": {
            **((node.config or {}).get("execution", {})),
            "crashdump_dir": str(log_dir), "crashfile_format": "txt"}}
    return wf


def _synthesis_desc(*, card: dict, is_demo: bool, samples: int, seed: int, sha: str, sampling=None) -> str:
    demo = (" This was the embedded *demonstration* model, trained on synthetic phantoms only; "
            "its maps are not suitable for research conclusions.") if is_demo else ""
    return (
        "\n\n#### PSR synthesis\n\n"
        "The preprocessed T1w and FLAIR images were encoded by a 3D KL autoencoder and a "
        "PSR latent was sampled by a frozen diffusion backbone steered by three conditioning "
        "streams: semantic cross-attention tokens, a spatial ControlNet and adaptive low-rank "
        "(LoRA) adapters [@demist; @ldm; @controlnet; @lora], built on MONAI [@monai_generative]. "
        + (f"The sampler was {sampling.describe()}. " if sampling is not None else "")
        + f"{samples} sample(s) were drawn (seed {seed}); with more than one, the per-voxel "
        "standard deviation across samples is reported as the spread of the samples (not a calibrated "
        "estimate of the map's error). "
        f"Model: {card.get('name', 'demist model')} (SHA256 {sha[:12]}).{demo}\n"
    )
