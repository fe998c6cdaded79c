"""``demist BIDS_DIR OUT group``: the cohort's data, from the participant outputs.

The derivatives are enough: ``BIDS_DIR`` may be the output directory itself (or
absent); a raw dataset, when given, adds its ``participants.tsv`` columns and a
row for each of its subjects without results.

:func:`collect_group` measures every run, writes ``group_PSR.tsv`` and returns
what the page shows (:class:`GroupResults`); the page itself is drawn by
:mod:`demist_bids.reports.group` (``demist_bids.cli.group`` runs both). The only
place in :mod:`demist_bids.group` that reads the configuration; the modules
below take explicit arguments.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from demist_bids.bids import raw_dataset
from demist_bids.bids.query import default_psr_derivatives

LOGGER = logging.getLogger("demist.group")

TSV_NAME = "group_PSR.tsv"
SPLIT_CANDIDATES = ("group", "diagnosis", "dx", "condition", "cohort", "status")
"""participants.tsv columns that split the report's plots, first present wins."""


@dataclass
class GroupResults:
    """What the group level found: the table (as written to ``group_PSR.tsv``) and the
    page's ingredients."""

    table: Any
    """One row per run (pandas DataFrame)."""
    outliers: list = field(default_factory=list)
    failures: list = field(default_factory=list)
    thumbnails: dict = field(default_factory=dict)
    """bids_name -> the axial PSR slice shown beside the run."""
    split: str | None = None
    """The participants.tsv column that colours the plots."""
    links: dict = field(default_factory=dict)
    """bids_name -> the subject report's file name, beside the page."""
    dataset_name: str = ""
    exit_code: int = 0
    """0, or 65 when some run had an unusable image."""


def choose_split(participants) -> str | None:
    """The participants.tsv column colouring the plots: a known grouping column, else a small
    categorical one (2-6 levels)."""
    if participants is None:
        return None
    for column in SPLIT_CANDIDATES:
        if column in participants.columns and participants[column].notna().any():
            return column
    import pandas as pd

    for column in participants.columns:
        values = participants[column].dropna()
        if values.empty or pd.to_numeric(values, errors="coerce").notna().all():
            continue
        if 2 <= values.nunique() <= 6:
            return column
    return None


def _sources(run, *, lesions_root: Path | None, psr_root: Path | None, tissue_roots: list[Path]):
    from demist_bids.group.collect import find_derivative_file
    from demist_bids.group.measures import RunSources

    sources = RunSources()
    if lesions_root is not None:
        masks = find_derivative_file(
            lesions_root, run.subject, run.session, "*_mask.nii*", exclude=("desc-brain", "_space-")
        )
        sources.lesion_mask = masks[0] if masks else None
        if len(masks) > 1:
            LOGGER.warning("several lesion masks for %s; using %s", run.prefix, masks[0].name)
    if psr_root is not None:
        measured = find_derivative_file(
            psr_root,
            run.subject,
            run.session,
            "*_PSRmap.nii*",
            exclude=("desc-synth", "desc-std", "_space-"),
        )
        sources.measured = measured[0] if measured else None
        if len(measured) > 1:
            LOGGER.warning(
                "several measured PSR maps for %s; using %s", run.prefix, measured[0].name
            )
    for root in tissue_roots:
        dseg = find_derivative_file(
            root,
            run.subject,
            run.session,
            "*_dseg.nii*",
            exclude=("_space-", "desc-aseg", "desc-aparcaseg"),
        )
        if dseg:
            sources.tissue = dseg[0]
            break
    return sources


def _derivative_roots(config) -> dict[str, Any]:
    """Lesion, measured-PSR and tissue derivatives, with the participant level's defaults.

    Lesions: ``-d lesions=PATH``, else ``BIDS_DIR/derivatives/lesions``. Measured
    PSR: ``--psr-derivatives``, else ``-d psr=PATH``, else the first derivatives
    dataset of the input holding ``*_PSRmap`` images. Tissue: any other ``-d``.
    """
    execution = config.execution
    raw = raw_dataset(execution.bids_dir, execution.output_dir)
    derivatives = dict(execution.derivatives)
    lesions = derivatives.get("lesions")
    default_lesions = Path(raw) / "derivatives" / "lesions" if raw else None
    if lesions is None and default_lesions is not None and default_lesions.is_dir():
        lesions = default_lesions
    psr = config.train.psr_derivatives or derivatives.get("psr")
    if psr:
        psr = Path(psr)
    elif raw is not None:
        psr = default_psr_derivatives(raw, exclude=execution.output_dir)
    if psr is not None:
        LOGGER.info("measured PSR maps from %s", psr)
    return {
        "lesions_root": Path(lesions) if lesions else None,
        "psr_root": psr,
        "tissue_roots": [
            Path(p) for name, p in derivatives.items() if name not in ("lesions", "psr")
        ],
    }


def _missing_row(failure) -> dict[str, Any]:
    from demist_bids.derivatives.outputs import output_path

    return {
        "bids_name": output_path("psr", failure.subject, failure.session).name.split(".nii")[0],
        "subject": failure.subject,
        "session": failure.session,
        "status": failure.status,
        "failure_reason": failure.reason,
    }


def _dataset_name(dataset: Path) -> str:
    """The dataset's ``Name`` (dataset_description.json), else its folder's name."""
    name = Path(dataset).name
    description = Path(dataset) / "dataset_description.json"
    if description.exists():
        try:
            name = json.loads(description.read_text()).get("Name") or name
        except (OSError, json.JSONDecodeError):
            pass
    return name


def collect_group(config) -> GroupResults:
    """Measure every run and write ``group_PSR.tsv`` into the output directory.

    Every image of a run is checked (header and byte stream) before its voxels
    are read; a run with an unusable one is a failed row naming the file, and the
    others are still measured (``exit_code`` 65).

    Raises:
        MissingInputError: the output directory holds no participant results.
    """
    from demist_bids.derivatives.outputs import output_path
    from demist_bids.exceptions import BadDataError, MissingInputError
    from demist_bids.group.collect import Failure, find_failures, find_runs, read_participants
    from demist_bids.group.measures import image_measures, sidecar_measures
    from demist_bids.group.table import build_table, flag_outliers, write_tsv
    from demist_bids.utils.image_check import check_image_files

    execution = config.execution
    out = Path(execution.output_dir)
    bids_dir = raw_dataset(execution.bids_dir, out)
    if bids_dir is None:
        LOGGER.warning(
            "no raw BIDS dataset at %s: the group level works from the derivatives alone "
            "(no participants.tsv columns, no rows for input subjects without results)",
            execution.bids_dir,
        )
    labels = [label.removeprefix("sub-") for label in execution.participant_label]
    sessions = [label.removeprefix("ses-") for label in execution.session_label]
    runs = [
        run
        for run in find_runs(out)
        if (not labels or run.subject in labels) and (not sessions or run.session in sessions)
    ]
    if not runs:
        raise MissingInputError(
            f"no participant results ({output_path('psr', '*').name}) in {out}: "
            "run the participant level first"
        )
    LOGGER.info("group level: %d subject/session runs with results in %s", len(runs), out)

    roots = _derivative_roots(config)
    failures = find_failures(bids_dir, out, runs, participant_label=labels, session_label=sessions)
    crashed = {(f.subject, f.session): f for f in failures if f.status == "failed"}

    rows, thumbnails, links = [], {}, {}
    unusable = False
    for run in runs:
        row: dict[str, Any] = {
            "bids_name": run.bids_name,
            "subject": run.subject,
            "session": run.session,
            "status": "ok",
        }
        failure = crashed.pop((run.subject, run.session), None)
        if failure is not None:
            row.update(status="failed", failure_reason=failure.reason)
        if run.report is not None:
            links[run.bids_name] = run.report.name
        try:
            sources = _sources(run, **roots)
            check_image_files([run.psr, run.std, run.brain_mask, run.dseg, sources.lesion_mask,
                               sources.tissue, sources.measured], execution.max_image_voxels)
            measures, thumbnails[run.bids_name] = image_measures(run, sources)
        except Exception as err:  # an unreadable output must not hide the rest of the cohort
            LOGGER.error("cannot measure %s: %s", run.psr, err)
            unusable |= isinstance(err, BadDataError)
            reason = f"unreadable outputs: {err}"
            row.update(status="failed", failure_reason=reason)
            failures.append(Failure(run.subject, run.session, "failed", reason))
            measures = {}
        row.update(measures)
        row.update(sidecar_measures(run.sidecar))
        rows.append(row)
    done = {(run.subject, run.session) for run in runs}
    rows.extend(_missing_row(f) for f in failures if (f.subject, f.session) not in done)

    participants = read_participants(bids_dir) if bids_dir is not None else None
    table = build_table(rows, participants)
    outliers = flag_outliers(table)
    write_tsv(table, out / TSV_NAME)
    LOGGER.info(
        "wrote %s: %d runs, %d outlier runs, %d failed or missing",
        out / TSV_NAME,
        len(runs),
        len({o.bids_name for o in outliers}),
        len(failures),
    )
    return GroupResults(
        table=table,
        outliers=outliers,
        failures=failures,
        thumbnails=thumbnails,
        split=choose_split(participants),
        links=links,
        dataset_name=_dataset_name(bids_dir or out),
        exit_code=BadDataError.exit_code if unusable else 0,
    )
