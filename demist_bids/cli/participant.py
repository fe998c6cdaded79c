"""The participant level: validate, select, build the Nipype graph, run it, report.

Exit status, when at least one subject could be started: 0 if every selected
subject/session produced its outputs; otherwise 1 if any crashed in the
workflow (a worker process that dies stops the run within seconds), else 65 if
any had unusable images, else 66 if any lacked its T1w or FLAIR. The other
subjects always run. Faults end the run at once: 74 when outputs or reports
cannot be written (a full disk; the subject's previous outputs stay as they
were), 75 when another run holds one of the subjects (one run per subject and
output directory, :mod:`demist_bids.derivatives.locks`) or SIGTERM/SIGINT stopped
the run (a rerun resumes from the work directory).
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

from demist_bids.exceptions import BadDataError, DemistIOError, MissingInputError
from demist_bids.utils.devices import resolve_device

LOGGER = logging.getLogger("demist.participant")


def resolve_model(model: Path | None) -> tuple[Path, bool]:
    """The model directory to use and whether it is the embedded demo model."""
    if model is not None:
        return Path(model), False
    from demist_bids.data import demo_model_dir

    path = demo_model_dir()
    if not (path / "config.json").is_file():
        raise MissingInputError(
            f"no --model given and the embedded demo model is missing from {path}"
        )
    return path, True


def resolve_sampler(model_dir: Path, sampler: str, steps: int, *, configs=None):
    """The sampler that will run, decided once here and passed down to the nodes and the boilerplate.

    Args:
        configs: the model's and its student's parsed configurations by directory
            (:attr:`demist_bids.models.validation.CheckedModel.configs`), so no
            ``config.json`` is read again.

    Returns:
        :class:`demist_bids.inference.student.SamplingChoice` with ``sampler``/``steps``
        resolved (``auto`` becomes the model's own choice, ``distilled`` its student)
        and the configuration of the directory the nodes load.

    Raises:
        MissingInputError: ``--sampler distilled`` on a model without a student (exit 66).
    """
    from demist_bids.inference.student import resolve_sampling

    try:
        return resolve_sampling(model_dir, sampler, steps, configs=configs)
    except FileNotFoundError as exc:
        raise MissingInputError(f"{exc} (train one with: demist BIDS OUT train --stage distill)") from exc


def check_template_spaces(output_spaces: list[str]) -> None:
    """Every template of ``--output-spaces`` has files (TemplateFlow, or nilearn's own template).

    Raises:
        MissingInputError: a template without files, named (exit 66).
    """
    from demist_bids.utils.spaces import template_spaces

    spaces = template_spaces(output_spaces)
    if spaces:
        from demist_bids.preprocessing.templates import check_space_template

        for space in spaces:
            LOGGER.info("output space %s: template from %s", space,
                        check_space_template(space.name, space.res))


def _preflight(inputs, max_voxels: int):
    """Check every image before building the graph; split usable from unusable subjects."""
    from demist_bids.preprocessing.validation import check_pair
    from demist_bids.utils.image_check import check_image_files

    usable, bad = [], []
    for item in inputs:
        try:
            check_image_files([item.brain_mask, item.lesion_mask], max_voxels)
            check_pair(item.t1w, item.flair, max_voxels=max_voxels)
        except BadDataError as exc:
            LOGGER.error("%s: %s", item.bids_name, exc)
            bad.append((item, str(exc)))
        else:
            usable.append(item)
    return usable, bad


def run_participant(config) -> int:
    """Run the participant level; return the exit status."""
    from demist_bids.bids.query import collect_inputs
    from demist_bids.bids.validation import validate_dataset
    from demist_bids.cli.boilerplate import write_boilerplate
    from demist_bids.bids import read_bids_filters
    from demist_bids.derivatives.dataset import write_dataset_files

    ex = config.execution
    if ex.reports_only:
        return _reports_only(config)
    check_template_spaces(ex.output_spaces)  # 66 before any work
    if not ex.skip_bids_validation:
        validate_dataset(ex.bids_dir)
    bids_filter = read_bids_filters(ex.bids_filter_file) if ex.bids_filter_file else None
    inputs, missing = collect_inputs(
        ex.bids_dir, work_dir=ex.work_dir, participant_label=ex.participant_label,
        session_label=ex.session_label, bids_filter=bids_filter, derivatives=ex.derivatives,
    )
    for miss in missing:
        LOGGER.error(miss.message)
    if not inputs:
        raise MissingInputError("; ".join(m.message for m in missing))

    model_dir, is_demo = resolve_model(config.synthesis.model)
    from demist_bids.models.validation import check_model
    from demist_bids.utils.model_files import card_of, directory_sha256

    # 64 before any work: sizes, checksums, tensor shapes. The one reading of each config.json
    # in this run: the sampler, the card and the synthesis nodes use what it parsed.
    checked = check_model(model_dir)
    sampling = resolve_sampler(model_dir, config.synthesis.sampler, config.synthesis.steps,
                               configs=checked.configs)  # 66 before any work

    card, sha = card_of(checked.config.card), directory_sha256(model_dir)
    if is_demo:
        LOGGER.warning(
            "using the embedded DEMO model (trained on synthetic phantoms; not for research "
            "use); pass --model to use a trained model"
        )
    LOGGER.info("model %s (sha256 %s)", model_dir, sha[:12])

    usable, bad = _preflight(inputs, ex.max_image_voxels)
    write_dataset_files(ex.output_dir, ex.bids_dir)
    device = resolve_device(config.synthesis.device)
    from demist_bids.workflows.base import init_demist_wf

    wf = init_demist_wf(config, usable, model_dir=model_dir, model_sha256=sha,
                        is_demo=is_demo, card=card, device=device, sampling=sampling)
    if ex.write_graph:
        _write_graph(wf)
    write_boilerplate(wf, Path(ex.output_dir) / "logs")
    if ex.boilerplate_only:
        return 0

    from demist_bids.derivatives.locks import hold_subjects

    # 75 if another run holds one of these subjects; nothing half-written survives below
    with hold_subjects(ex.output_dir, [i.subject for i in usable], ex.run_uuid):
        from demist_bids.reports.about import run_record, write_run_record
        from demist_bids.reports.subject import write_subject_reports

        started = time.monotonic()
        n_gpus = 1 if device.startswith("cuda") else 0
        crashed = _run_workflow(wf, config, n_gpus=n_gpus) if usable else False
        LOGGER.info("participant workflow finished in %.0f s", time.monotonic() - started)
        record = run_record(config, device=device)
        try:
            for item in usable:  # beside the graph's reportlets; nothing for `bad`
                write_run_record(ex.output_dir, item.subject, item.bids_name, record)
            failed = write_subject_reports(ex.output_dir, usable, run_uuid=ex.run_uuid,
                                           extra_errors={i.bids_name: [m] for i, m in bad},
                                           record=record)
        except OSError as exc:  # a full disk or a quota: 74, each report is whole or absent
            raise DemistIOError(f"cannot write the subject reports into {ex.output_dir}: "
                                f"{exc.strerror or exc}") from exc
        if crashed or failed:
            LOGGER.error("some subjects failed: %s; see their reports and crash files",
                         ", ".join(failed) or "see logs")
            return 1
        if bad:
            return BadDataError.exit_code
        if missing:
            return MissingInputError.exit_code
        return 0


def _reports_only(config) -> int:
    """``--reports-only``: rebuild the subject reports and dataset files from OUT; 66 if empty."""
    from demist_bids.derivatives.dataset import write_dataset_files
    from demist_bids.reports.subject import rebuild_subject_reports

    ex = config.execution
    subjects = rebuild_subject_reports(
        ex.output_dir, bids_dir=ex.bids_dir, run_uuid=ex.run_uuid,
        participant_label=ex.participant_label, session_label=ex.session_label,
    )
    write_dataset_files(ex.output_dir, ex.bids_dir)
    LOGGER.info("--reports-only: rebuilt the reports of %s in %s", ", ".join(
        f"sub-{s}" for s in subjects), ex.output_dir)
    return 0


def _write_graph(wf) -> None:
    """``--write-graph``, as fMRIPrep: the colored hierarchical graph in the work directory.

    Without Graphviz's ``dot`` only ``graph.dot`` is written (with a warning); the run goes on.
    """
    try:
        path = wf.write_graph(graph2use="colored", format="svg", simple_form=True)
    except OSError as exc:
        dot = Path(wf.base_dir) / wf.name / "graph.dot"
        LOGGER.warning("workflow graph written as %s only (no SVG: %s)", dot, exc)
    else:
        LOGGER.info("workflow graph written to %s", path)


def _run_workflow(wf, config, *, n_gpus: int) -> bool:
    """Run the graph with the configured plugin; return True when some node crashed."""
    from nipype import config as nipype_config

    from demist_bids.utils import resource_monitor

    ny = config.nipype
    plugin_args = dict(ny.plugin_args)
    # an execution setting, not a plugin argument; --use-plugin files may set it beside the plugin's
    poll_sleep = float(plugin_args.pop("poll_sleep_duration", ny.poll_sleep))
    nipype_config.update_config({
        "execution": {
            "stop_on_first_crash": config.execution.stop_on_first_crash,
            "crashfile_format": "txt",
            "remove_unnecessary_outputs": False,
            "check_version": False,
            "poll_sleep_duration": poll_sleep,
        },
    })
    resource_monitor.set_nipype_monitoring(ny.resource_monitor)
    if ny.plugin == "MultiProc":
        plugin_args.setdefault("n_procs", ny.nprocs)
        plugin_args.setdefault("raise_insufficient", False)
        plugin_args.setdefault("maxtasksperchild", 1)
        plugin_args.setdefault("n_gpu_procs", n_gpus)
        if ny.mem_gb:
            plugin_args.setdefault("memory_gb", ny.mem_gb)
    logs = Path(config.execution.output_dir) / "logs"
    node_log = (resource_monitor.node_log(logs / f"resources-{config.execution.run_uuid}.jsonl",
                                          plugin_args, ny.plugin, Path(wf.base_dir) / wf.name)
                if ny.resource_monitor else contextlib.nullcontext())
    records = runner = None
    try:
        with node_log as records:
            if ny.plugin == "MultiProc":  # ends cleanly when a worker dies or the run is stopped
                from demist_bids.workflows.multiproc import SafeMultiProcPlugin

                runner = SafeMultiProcPlugin(plugin_args)
            wf.run(plugin=runner or ny.plugin, plugin_args=plugin_args)
    except RuntimeError as exc:
        written = [e for e in getattr(runner, "errors", []) if isinstance(e, DemistIOError)]
        if written:  # the output disk is full or unwritable: write nothing more (74)
            raise written[0] from None
        LOGGER.error("the workflow did not finish cleanly: %s", str(exc).splitlines()[0])
        return True
    finally:
        if ny.resource_monitor and records is not None:
            resource_monitor.summarise(records, records.with_suffix(".tsv"))
    if ny.plugin == "SLURMGraph":
        # SLURMGraph returns once the jobs are submitted: wait for them to end.
        from demist_bids.cluster.graph import wait_for_slurm_graph

        wait_for_slurm_graph(Path(wf.base_dir) / wf.name / "batch")
    return False
