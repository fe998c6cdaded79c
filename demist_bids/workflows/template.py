"""Template-space outputs (``--output-spaces MNI152NLin2009cAsym:res-2``), one sub-workflow each.

The T1w brain on the model grid is registered to the template once
(:class:`~demist_bids.interfaces.registration.TemplateRegistration`); the PSR
map, its std map and the brain mask on the model grid (the grid the PSR was
synthesized on) are then resampled onto each requested resolution of that
template through the same transform.
"""

from __future__ import annotations

DESC_TEMPLATE = """\

For spatial normalization to {template}, the brain-extracted T1w was registered
to the template's brain with SimpleITK [@simpleitk]: an affine transform
(Mattes mutual information, multi-start over head size), then a cubic B-spline
deformation (control points 25 mm apart, Mattes mutual information, two
levels at 4 and 2 mm). The template came from {source}. The PSR map, its
std map across samples and the brain mask were resampled onto the template grid
({grids}) in one step (linear interpolation; nearest neighbour for the mask),
and both directions of the transform were saved. """


def init_template_wf(*, template: str, resolutions: list[str], samples: int = 1,
                     omp_nthreads: int = 1, source: str = "TemplateFlow [@templateflow]",
                     name: str | None = None):
    """Register to ``template`` and resample the maps onto each of its ``resolutions``.

    Workflow Graph
        .. workflow::
            :graph2use: orig
            :simple_form: yes

            from demist_bids.workflows.template import init_template_wf
            wf, keys = init_template_wf(template="MNI152NLin2009cAsym", resolutions=["2"])

    Inputs
    ------
    t1w, brain_mask, psr, psr_std
        On the model's 1 mm grid (``psr_std`` only with ``samples > 1``).

    Outputs
    -------
    out_files
        The files to commit, in the order of the returned keys
        (:func:`demist_bids.derivatives.outputs.in_space` keys).
    registration
        The registration record (JSON) the sidecars quote.
    out_report
        The template-registration reportlet (SVG).

    Returns
    -------
    ``(workflow, keys)``
    """
    from nipype.interfaces import utility as niu
    from nipype.pipeline import engine as pe
    from niworkflows.engine.workflows import LiterateWorkflow as Workflow

    from demist_bids.derivatives.outputs import in_space
    from demist_bids.interfaces.reports import TemplateReportlet
    from demist_bids.interfaces.registration import ApplyTemplateTransform, TemplateRegistration

    wf = Workflow(name=name or f"template_{template}_wf")
    wf.__desc__ = DESC_TEMPLATE.format(
        template=template, source=source,
        grids=", ".join(f"res-{r}" for r in resolutions))
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w", "brain_mask", "psr", "psr_std"]),
                        name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["out_files", "registration",
                                                       "out_report"]), name="outputnode")
    register = pe.Node(
        TemplateRegistration(template=template, resolution=resolutions[0],
                             resolutions=list(resolutions), num_threads=omp_nthreads),
        name="register", n_procs=omp_nthreads, mem_gb=1.5)
    report = pe.Node(TemplateReportlet(), name="report")
    keys = [in_space("t1w_to_template_xfm", template).key,
            in_space("template_to_t1w_xfm", template).key]
    maps = [("psr_space", "psr", "linear"), ("brain_mask_space", "brain_mask", "nearest")]
    if samples > 1:
        maps.append(("psr_std_space", "psr_std", "linear"))
    merge = pe.Node(niu.Merge(2 + len(maps) * len(resolutions)), name="merge",
                    run_without_submitting=True)
    wf.connect([
        (inputnode, register, [("t1w", "t1w"), ("brain_mask", "brain_mask")]),
        (register, merge, [("forward_xfm", "in1"), ("inverse_xfm", "in2")]),
        (register, report, [("template_t1w", "template"), ("t1w_template", "subject"),
                            ("template_mask", "template_mask")]),
        (register, outputnode, [("out_json", "registration")]),
        (report, outputnode, [("out_report", "out_report")]),
        (merge, outputnode, [("out", "out_files")]),
    ])  # fmt: skip
    index = 3
    for res in resolutions:
        for key, field, interpolation in maps:
            node = pe.Node(ApplyTemplateTransform(template=template, resolution=res,
                                                  interpolation=interpolation),
                           name=f"{field}_res{res}", mem_gb=0.5)
            wf.connect([
                (inputnode, node, [(field, "in_file")]),
                (register, node, [("forward_xfm", "transform")]),
                (node, merge, [("out_file", f"in{index}")]),
            ])  # fmt: skip
            keys.append(in_space(key, template, res).key)
            index += 1
    return wf, keys


def connect_template_spaces(wf, spaces, *, synthesis_wf, commit, merge_reportlets,
                            first_reportlet: int, samples: int, omp_nthreads: int) -> list[str]:
    """Add one :func:`init_template_wf` per template of ``spaces`` to a subject's workflow.

    Its files go to ``commit`` (``space_files``/``space_keys``/``registrations``) and its
    reportlet to ``merge_reportlets`` from input ``first_reportlet`` on.

    Returns:
        The reportlet names, in order (``template<name>``).
    """
    from nipype.interfaces import utility as niu
    from nipype.pipeline import engine as pe

    from demist_bids.preprocessing.templates import check_space_template

    templates: dict[str, list[str]] = {}
    for space in spaces:
        templates.setdefault(space.name, []).append(space.res)
    merge_files = pe.Node(niu.Merge(len(templates)), name="merge_space_files",
                          run_without_submitting=True)
    merge_records = pe.Node(niu.Merge(len(templates)), name="merge_registrations",
                            run_without_submitting=True)
    all_keys, names = [], []
    for i, (template, resolutions) in enumerate(templates.items(), start=1):
        source = ("TemplateFlow [@templateflow]" if check_space_template(template, resolutions[0])
                  == "TemplateFlow" else "the copy shipped with *nilearn* [@nilearn]")
        template_wf, keys = init_template_wf(template=template, resolutions=resolutions,
                                             samples=samples, omp_nthreads=omp_nthreads,
                                             source=source)
        all_keys += keys
        names.append(f"template{template}")
        wf.connect([
            (synthesis_wf, template_wf, [("outputnode.t1w_model", "inputnode.t1w"),
                                         ("outputnode.brain_mask_model", "inputnode.brain_mask"),
                                         ("outputnode.psr_model", "inputnode.psr")]),
            (template_wf, merge_files, [("outputnode.out_files", f"in{i}")]),
            (template_wf, merge_records, [("outputnode.registration", f"in{i}")]),
            (template_wf, merge_reportlets, [("outputnode.out_report",
                                              f"in{first_reportlet + i - 1}")]),
        ])  # fmt: skip
        if samples > 1:
            wf.connect([(synthesis_wf, template_wf, [("outputnode.psr_std_model",
                                                      "inputnode.psr_std")])])
    commit.inputs.space_keys = all_keys
    wf.connect([(merge_files, commit, [("out", "space_files")]),
                (merge_records, commit, [("out", "registrations")])])
    return names
