"""Assemble ``OUT/sub-X.html`` from the reportlets in ``OUT/sub-X/figures`` (NiPreps style).

The page is self-contained (SVGs inlined, CSS inline, no scripts from outside)
so it opens offline and can be mailed. It is written for every selected
subject, also for those that failed: then it shows their errors and crash
files, so the reason is one click away. Besides the figures it lists every step
and header fix applied (from the PSR sidecar), the run that made the outputs
(About: command line, version, run id, date, environment, device; from the run
record beside the reportlets) and the Methods text the run wrote
(``logs/CITATION.md``). Everything it reads is in the output directory, so
``--reports-only`` rebuilds it without recomputing anything.
"""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from pathlib import Path

from demist_bids.bids import scan_prefix
from demist_bids import __version__
from demist_bids.derivatives.outputs import output_path, subject_session
from demist_bids.reports.about import read_run_record
from demist_bids.utils.atomic import atomic_write_text

SECTIONS = [
    ("registration", "Preprocessing: FLAIR registered to the T1w",
     "FLAIR edges over the bias-corrected T1w on the 1 mm model grid."),
    ("brainmask", "Brain mask", "Brain mask contour over the T1w."),
    ("psr", "Synthesized PSR", "Pool-size ratio inside the brain (units: ratio)."),
    ("uncertainty", "Uncertainty", "Per-voxel standard deviation across samples."),
]
TEMPLATE_CAPTION = ("The template's brain and the T1w brain resampled onto it (affine + B-spline "
                    "registration) flicker under the template brain's outline "
                    "(--output-spaces).")
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#222}
header{background:#1b3a57;color:#fff;padding:1em 2em}
main{padding:0 2em 2em 2em;max-width:1200px}
h2{border-bottom:2px solid #1b3a57;padding-top:1em}
.reportlet svg{max-width:100%;height:auto;background:#000}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
.error{background:#fde2e1;border-left:4px solid #c0392b;padding:.5em 1em;white-space:pre-wrap;font-family:monospace}
.warning{background:#fff4d6;border-left:4px solid #e6a700;padding:.5em 1em}
nav a{color:#fff;margin-right:1em}
code{background:#f3f3f3;padding:0 .2em;word-break:break-all}
.methods{max-width:60em;line-height:1.45}
"""


def _svg(path: Path) -> str:
    text = path.read_text()
    start = text.find("<svg")
    return text[start:] if start >= 0 else text


def _table(rows: dict) -> str:
    cells = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>"
        for k, v in rows.items()
    )
    return f"<table>{cells}</table>"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "; ".join(_fmt(v) for v in value) or "none"
    return str(value)


def _crash_errors(log_dir: Path) -> list[str]:
    errors = []
    for crash in sorted(log_dir.glob("crash-*.txt")) if log_dir.is_dir() else []:
        lines = [ln for ln in crash.read_text(errors="replace").splitlines() if ln.strip()]
        last = next((ln for ln in reversed(lines) if "Error" in ln or "Exception" in ln),
                    lines[-1] if lines else "")
        errors.append(f"{crash.name}: {last.strip()}")
    return errors


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
        + (f" (final cost {_fmt(cost)})" if cost is not None else ""),
        "Both images resampled once onto the 1 mm RAS model grid aligned to the T1w",
        mask_step,
        "Tissue labels (1 GM, 2 WM, 3 CSF): three-class Gaussian mixture of T1w intensity",
        "Each contrast scaled to [0, 1] between its 0th and 99.5th percentiles in the brain",
        f"PSR synthesis: {sampler.get('Name')} sampler, {sampler.get('Steps')} steps, "
        f"{sampler.get('Samples')} sample(s), seed {sampler.get('Seed')}, "
        f"on {sampler.get('Device')}",
        "Maps resampled back onto the native T1w grid",
    ]


def _list(items: list[str]) -> str:
    return "<ol>" + "".join(f"<li>{html.escape(str(i))}</li>" for i in items) + "</ol>"


def _outputs_of(out: Path, bids_name: str) -> list[str]:
    """File names of one subject/session's outputs (images and transforms, not sidecars)."""
    anat = out / output_path("psr", *subject_session(bids_name)).parent
    return sorted(p.name for p in anat.glob(f"{bids_name}_*")
                  if p.is_file() and not p.name.startswith(".") and p.suffix != ".json")


def _about(record: dict, meta: dict) -> str:
    if not record:
        return ("<p>No run record was found beside the figures (outputs of an older demist?). "
                "From the sidecar: " + html.escape(str(meta.get("SoftwareVersion", "unknown")))
                + (f", device {html.escape(str(meta['Sampler'].get('Device')))}"
                   if meta.get("Sampler") else "") + ".</p>")
    rows = {"Command line": record.get("CommandLine"), "demist version": record.get("Version"),
            "Run ID": record.get("RunID"), "Date": record.get("Date"),
            "Device": record.get("Device")}
    rows.update({f"Environment: {k}": v for k, v in (record.get("Environment") or {}).items()})
    return _table(rows)


def _methods(out: Path) -> str:
    """``logs/CITATION.md`` as paragraphs (headings kept), or a note when it is missing."""
    path = out / "logs" / "CITATION.md"
    if not path.is_file():
        return ("<p>No methods text was found (logs/CITATION.md is written by the participant "
                "level).</p>")
    blocks = []
    for block in path.read_text(errors="replace").split("\n\n"):
        block = block.strip()
        if not block or block.startswith("<!--"):
            continue
        level = len(block) - len(block.lstrip("#"))
        if level:
            blocks.append(f"<h{min(level + 1, 4)}>{html.escape(block.lstrip('#').strip())}"
                          f"</h{min(level + 1, 4)}>")
        else:
            blocks.append(f"<p>{html.escape(' '.join(block.split()))}</p>")
    return f"<div class='methods'>{''.join(blocks)}</div>"


def render_subject_report(output_dir: Path, subject: str, bids_names: list[str], *,
                          run_uuid: str, errors: list[str], record: dict | None = None) -> str:
    """The HTML text of one subject's report (``record``: this run's, for the About section of
    subjects without a saved one, such as those refused before the workflow)."""
    out = Path(output_dir)
    figures = out / f"sub-{subject}" / "figures"
    built = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nav = "".join(f"<a href='#{a}'>{t}</a>" for a, t in
                  (("summary", "Summary"), ("about", "About"), ("methods", "Methods"),
                   ("errors", "Errors")))
    parts = [f"<header><h1>sub-{html.escape(subject)}</h1>"
             f"<p>demist {__version__} &middot; report built {built} by run "
             f"{html.escape(run_uuid)}</p><nav>{nav}</nav></header><main>"]
    abouts = []
    for bids_name in bids_names:
        anchor = " id='summary'" if bids_name == bids_names[0] else ""
        if len(bids_names) > 1:
            parts.append(f"<h1{anchor}>{html.escape(bids_name)}</h1>")
            anchor = ""
        sidecar = out / output_path("psr", *subject_session(bids_name), extension=".json")
        meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        abouts.append((bids_name, read_run_record(out, subject, bids_name) or record or {}, meta))
        if meta:
            if meta.get("Warning"):
                parts.append(f"<p class='warning'>{html.escape(meta['Warning'])}</p>")
            parts.append(f"<h2{anchor}>Summary</h2>" + _table({
                "Sources": meta.get("Sources"),
                "Model": f"{meta.get('Model', {}).get('Name')} "
                         f"(sha256 {str(meta.get('Model', {}).get('SHA256'))[:12]})",
                "Sampler": ", ".join(f"{k}={v}" for k, v in meta.get("Sampler", {}).items()),
                "Synthesis runtime (s)": meta.get("RuntimeSeconds"),
                **{f"QC: {k}": v for k, v in meta.get("QC", {}).items() if k != "fixes"},
            }))
            fixes = meta.get("QC", {}).get("fixes") or []
            parts.append("<h2>Processing steps applied</h2>" + _list(applied_steps(meta))
                         + "<h3>Header fixes</h3>"
                         + (_list(fixes) if fixes else "<p>None: both headers were consistent.</p>")
                         + "<h3>Outputs</h3>" + _list(_outputs_of(out, bids_name)))
        for key, title, caption in SECTIONS:
            svg = figures / f"{bids_name}_desc-{key}.svg"
            if svg.is_file():
                parts.append(f"<h2>{title}</h2><p>{caption}</p>"
                             f"<div class='reportlet'>{_svg(svg)}</div>")
        for svg in sorted(figures.glob(f"{bids_name}_desc-template*.svg")):
            template = html.escape(svg.stem.split("_desc-template", 1)[1])
            parts.append(f"<h2>Registration to {template}</h2><p>{TEMPLATE_CAPTION}</p>"
                         f"<div class='reportlet'>{_svg(svg)}</div>")
        lesions = meta.get("LesionValues") or {}
        if lesions:
            parts.append("<h2>Lesions vs normal-appearing white matter</h2>"
                         "<p>Median synthesized PSR per region and ROC AUC separating NAWM "
                         "from lesions (1 = perfect).</p>" + _table(lesions))
    if not abouts and record:  # refused before the workflow: no outputs, but this run
        abouts.append((f"sub-{subject}", record, {}))
    parts.append("<h2 id='about'>About</h2>")
    for bids_name, record, meta in abouts:
        if len(abouts) > 1:
            parts.append(f"<h3>{html.escape(bids_name)}</h3>")
        parts.append(_about(record, meta))
    parts.append("<h2 id='methods'>Methods</h2>" + _methods(out))
    parts.append("<h2 id='errors'>Errors</h2>")
    if errors:
        parts += [f"<div class='error'>{html.escape(e)}</div>" for e in errors]
    else:
        parts.append("<p>No errors to report.</p>")
    parts.append("</main>")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>demist: sub-{html.escape(subject)}</title><style>{CSS}</style></head>"
            f"<body>{''.join(parts)}</body></html>\n")


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
        errors = _crash_errors(Path(output_dir) / f"sub-{subject}" / "log" / run_uuid)
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
