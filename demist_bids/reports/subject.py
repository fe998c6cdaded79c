"""Assemble ``OUT/sub-X.html`` from the reportlets in ``OUT/sub-X/figures`` (NiPreps style).

The page is rendered from ``templates/subject.html`` and is self-contained (SVGs
inlined, the shared stylesheet inline, no scripts) so it opens offline and can
be mailed. It is written for every selected subject, also for those that
failed: then it shows their errors and crash files (read by
:mod:`demist_bids.utils.crashes`, as the group level reads them), so the reason
is one click away. Besides the figures it lists every step
and header fix applied (from the PSR sidecar), the run that made the outputs
(About: command line, version, run id, date, environment, device; from the run
record beside the reportlets) and the Methods text the run wrote
(``logs/CITATION.md``). Everything it reads is in the output directory, so
``--reports-only`` rebuilds it without recomputing anything.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from markupsafe import Markup

from demist_bids import __version__
from demist_bids.bids import scan_prefix
from demist_bids.derivatives.outputs import output_path, subject_session
from demist_bids.reports.about import read_run_record
from demist_bids.reports.render import fmt, render, svg
from demist_bids.utils.atomic import atomic_write_text
from demist_bids.utils.crashes import find_crashes

SECTIONS = [
    ("registration", "Preprocessing: FLAIR registered to the T1w",
     "FLAIR edges over the bias-corrected T1w on the 1 mm model grid."),
    ("brainmask", "Brain mask", "Brain mask contour over the T1w."),
    ("psr", "Synthesized PSR", "Pool-size ratio inside the brain (units: ratio)."),
    ("uncertainty", "Spread across samples", "Per-voxel standard deviation across samples: how much "
     "the sampler's chains differ, not an estimate of where the map is wrong."),
]
TEMPLATE_CAPTION = ("The template's brain and the T1w brain resampled onto it (affine + B-spline "
                    "registration) flicker under the template brain's outline "
                    "(--output-spaces).")


def _svg(path: Path) -> Markup:
    return svg(path.read_text())


def applied_steps(meta: dict) -> list[str]:
    """Every processing step the PSR sidecar records, in order, with the values it recorded."""
    qc, sampler = meta.get("QC", {}), meta.get("Sampler", {})
    fixes = qc.get("fixes") or []
    cost = qc.get("registration_cost")
    mask = qc.get("template")
    if mask == "input mask":
        mask_step = "Brain mask: the one given with --derivatives (another pipeline's)"
    elif mask == "skull-stripped input":
        mask_step = "Brain mask: the support of the already skull-stripped T1w"
    else:
        mask_step = (f"Brain mask: the {mask or 'template'} brain mask registered (affine) "
                     "to the T1w")
    return [
        "Header check of the T1w and FLAIR (orientation matrices, single-volume 4D squeezed, "
        "non-finite and negative values set to zero): "
        + (f"{len(fixes)} fix(es), listed below" if fixes else "no fix needed"),
        "N4 intensity non-uniformity correction of both images (SimpleITK)",
        "Rigid FLAIR-to-T1w registration maximising Mattes mutual information"
        + (f" (final cost {fmt(cost)})" if cost is not None else ""),
        "Both images resampled once onto the 1 mm RAS model grid aligned to the T1w",
        mask_step,
        "Tissue labels (1 GM, 2 WM, 3 CSF): three-class Gaussian mixture of T1w intensity",
        "Each contrast scaled to [0, 1] between its 0th and 99.5th percentiles in the brain",
        f"PSR synthesis: {sampler.get('Name')} sampler, {sampler.get('Steps')} steps, "
        f"{sampler.get('Samples')} sample(s), seed {sampler.get('Seed')}, "
        f"on {sampler.get('Device')}",
        "Maps resampled back onto the native T1w grid",
    ]


def _outputs_of(out: Path, bids_name: str) -> list[str]:
    """File names of one subject/session's outputs (images and transforms, not sidecars)."""
    anat = out / output_path("psr", *subject_session(bids_name)).parent
    return sorted(p.name for p in anat.glob(f"{bids_name}_*")
                  if p.is_file() and not p.name.startswith(".") and p.suffix != ".json")


def _about(record: dict, meta: dict) -> dict:
    """The About section of one scan: the run record's rows, or what the sidecar says."""
    if not record:
        device = meta["Sampler"].get("Device") if meta.get("Sampler") else None
        return {"rows": None, "version": meta.get("SoftwareVersion", "unknown"), "device": device}
    rows = {"Command line": record.get("CommandLine"), "demist version": record.get("Version"),
            "Run ID": record.get("RunID"), "Date": record.get("Date"),
            "Device": record.get("Device")}
    rows.update({f"Environment: {k}": v for k, v in (record.get("Environment") or {}).items()})
    return {"rows": list(rows.items())}


def _methods(out: Path) -> list[tuple[int, str]] | None:
    """``logs/CITATION.md`` as (heading level or 0 for a paragraph, text) blocks; None when
    it is missing."""
    path = out / "logs" / "CITATION.md"
    if not path.is_file():
        return None
    blocks = []
    for block in path.read_text(errors="replace").split("\n\n"):
        block = block.strip()
        if not block or block.startswith("<!--"):
            continue
        level = len(block) - len(block.lstrip("#"))
        if level:
            blocks.append((min(level + 1, 4), block.lstrip("#").strip()))
        else:
            blocks.append((0, " ".join(block.split())))
    return blocks


def _scan(out: Path, figures: Path, bids_name: str, meta: dict) -> dict:
    """What the page shows of one subject/session: summary, steps, figures, lesion values."""
    scan = {"name": bids_name, "meta": bool(meta), "warning": meta.get("Warning"),
            "figures": [], "lesions": list((meta.get("LesionValues") or {}).items())}
    if meta:
        scan["summary"] = list({
            "Sources": meta.get("Sources"),
            "Model": f"{meta.get('Model', {}).get('Name')} "
                     f"(sha256 {str(meta.get('Model', {}).get('SHA256'))[:12]})",
            "Sampler": ", ".join(f"{k}={v}" for k, v in meta.get("Sampler", {}).items()),
            "Synthesis runtime (s)": meta.get("RuntimeSeconds"),
            **{f"QC: {k}": v for k, v in meta.get("QC", {}).items() if k != "fixes"},
        }.items())
        scan["steps"] = applied_steps(meta)
        scan["fixes"] = meta.get("QC", {}).get("fixes") or []
        scan["outputs"] = _outputs_of(out, bids_name)
    for key, title, caption in SECTIONS:
        path = figures / f"{bids_name}_desc-{key}.svg"
        if path.is_file():
            scan["figures"].append({"title": title, "caption": caption, "svg": _svg(path)})
    for path in sorted(figures.glob(f"{bids_name}_desc-template*.svg")):
        template = path.stem.split("_desc-template", 1)[1]
        scan["figures"].append({"title": f"Registration to {template}",
                                "caption": TEMPLATE_CAPTION, "svg": _svg(path)})
    return scan


def render_subject_report(output_dir: Path, subject: str, bids_names: list[str], *,
                          run_uuid: str, errors: list[str], record: dict | None = None) -> str:
    """The HTML text of one subject's report (``record``: this run's, for the About section of
    subjects without a saved one, such as those refused before the workflow)."""
    out = Path(output_dir)
    figures = out / f"sub-{subject}" / "figures"
    scans, abouts = [], []
    for bids_name in bids_names:
        sidecar = out / output_path("psr", *subject_session(bids_name), extension=".json")
        meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        scans.append(_scan(out, figures, bids_name, meta))
        abouts.append((bids_name, _about(read_run_record(out, subject, bids_name) or record or {},
                                         meta)))
    if not abouts and record:  # refused before the workflow: no outputs, but this run
        abouts.append((f"sub-{subject}", _about(record, {})))
    built = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return render(
        "subject.html", title=f"demist: sub-{subject}", heading=f"sub-{subject}",
        subtitle=f"demist {__version__} · report built {built} by run {run_uuid}",
        nav=[("summary", "Summary"), ("about", "About"), ("methods", "Methods"),
             ("errors", "Errors")],
        scans=scans, abouts=abouts, methods=_methods(out), errors=errors,
    )


def write_subject_reports(output_dir: Path, inputs, *, run_uuid: str,
                          extra_errors: dict[str, list[str]] | None = None,
                          record: dict | None = None) -> list[str]:
    """Write ``sub-X.html`` for each subject in ``inputs``; return the bids names that failed."""
    extra_errors = extra_errors or {}
    by_subject: dict[str, list] = {}
    for item in inputs:
        by_subject.setdefault(item.subject, []).append(item)
    for name in extra_errors:
        subject = name.split("_")[0][4:]
        by_subject.setdefault(subject, [])
    failed = []
    for subject, items in sorted(by_subject.items()):
        errors = [c.summary for c in find_crashes(output_dir, subject, run_uuid=run_uuid)]
        names = [i.bids_name for i in items]
        for name, messages in extra_errors.items():
            if name.split("_")[0] == f"sub-{subject}":
                errors += messages
        for item in items:
            expected = Path(output_dir) / output_path("psr", item.subject, item.session)
            if not expected.is_file():
                failed.append(item.bids_name)
                if not errors:
                    errors.append(f"{item.bids_name}: no PSR map was produced")
        page = render_subject_report(output_dir, subject, names, run_uuid=run_uuid, errors=errors,
                                     record=record)
        atomic_write_text(Path(output_dir) / f"sub-{subject}.html", page)
    return failed


def rebuild_subject_reports(output_dir: Path, *, bids_dir: Path, run_uuid: str,
                            participant_label: list[str], session_label: list[str]) -> list[str]:
    """``--reports-only``: rewrite ``sub-X.html`` of every subject with outputs; nothing recomputed.

    A subject counts when it has a synthesized map or a crash file in the output
    directory. Its errors are those crash files newer than its map (as the group
    level reads them). Returns the subjects whose report was written.

    Raises:
        MissingInputError: the output directory holds no participant outputs (66); then
            nothing is written.
    """
    from demist_bids.exceptions import MissingInputError
    from demist_bids.group.collect import find_failures, find_runs

    out = Path(output_dir)
    runs = [r for r in find_runs(out)
            if (not participant_label or r.subject in participant_label)
            and (not session_label or r.session in session_label)]
    crashed = [f for f in find_failures(bids_dir, out, runs, participant_label=participant_label,
                                        session_label=session_label) if f.status == "failed"]
    if not runs and not crashed:
        raise MissingInputError(
            f"--reports-only: {out} holds no participant outputs "
            f"({output_path('psr', '*').name}) to build reports from; "
            "run the participant level first"
        )
    names: dict[str, list[str]] = {}
    errors: dict[str, list[str]] = {}
    for run in runs:
        names.setdefault(run.subject, []).append(run.prefix)
    for failure in crashed:
        prefix = scan_prefix(failure.subject, failure.session)
        names.setdefault(failure.subject, [])
        if prefix not in names[failure.subject]:
            names[failure.subject].append(prefix)
            errors.setdefault(failure.subject, []).append(f"{prefix}: no PSR map was produced")
        crash = failure.crash_file.name if failure.crash_file else "crash file"
        errors.setdefault(failure.subject, []).append(f"{crash}: {failure.reason}")
    for subject, bids_names in sorted(names.items()):
        page = render_subject_report(out, subject, sorted(bids_names), run_uuid=run_uuid,
                                     errors=errors.get(subject, []))
        atomic_write_text(out / f"sub-{subject}.html", page)
    return sorted(names)
