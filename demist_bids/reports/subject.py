"""Assemble ``OUT/sub-X.html`` from the reportlets in ``OUT/sub-X/figures`` (NiPreps style).

The page is self-contained (SVGs inlined, CSS inline, no scripts from outside)
so it opens offline and can be mailed. It is written for every selected
subject, also for those that failed: then it shows their errors and crash
files, so the reason is one click away.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from demist_bids import __version__
from demist_bids.derivatives.outputs import output_path, subject_session
from demist_bids.utils.atomic import atomic_write_text

SECTIONS = [
    ("registration", "Preprocessing: FLAIR registered to the T1w",
     "FLAIR edges over the bias-corrected T1w on the 1 mm model grid."),
    ("brainmask", "Brain mask", "Brain mask contour over the T1w."),
    ("psr", "Synthesized PSR", "Pool-size ratio inside the brain (units: ratio)."),
    ("uncertainty", "Uncertainty", "Per-voxel standard deviation across samples."),
]
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#222}
header{background:#1b3a57;color:#fff;padding:1em 2em}
main{padding:0 2em 2em 2em;max-width:1200px}
h2{border-bottom:2px solid #1b3a57;padding-top:1em}
.reportlet svg{max-width:100%;height:auto;background:#000}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
.error{background:#fde2e1;border-left:4px solid #c0392b;padding:.5em 1em;white-space:pre-wrap;font-family:monospace}
.warning{background:#fff4d6;border-left:4px solid #e6a700;padding:.5em 1em}
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


def render_subject_report(output_dir: Path, subject: str, bids_names: list[str], *,
                          run_uuid: str, errors: list[str]) -> str:
    """The HTML text of one subject's report."""
    out = Path(output_dir)
    figures = out / f"sub-{subject}" / "figures"
    parts = [f"<header><h1>sub-{html.escape(subject)}</h1>"
             f"<p>demist {__version__} &middot; run {html.escape(run_uuid)}</p></header><main>"]
    for bids_name in bids_names:
        if len(bids_names) > 1:
            parts.append(f"<h1>{html.escape(bids_name)}</h1>")
        sidecar = out / output_path("psr", *subject_session(bids_name), extension=".json")
        meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        if meta:
            if meta.get("Warning"):
                parts.append(f"<p class='warning'>{html.escape(meta['Warning'])}</p>")
            parts.append("<h2>Summary</h2>" + _table({
                "Sources": meta.get("Sources"),
                "Model": f"{meta.get('Model', {}).get('Name')} "
                         f"(sha256 {str(meta.get('Model', {}).get('SHA256'))[:12]})",
                "Sampler": ", ".join(f"{k}={v}" for k, v in meta.get("Sampler", {}).items()),
                "Synthesis runtime (s)": meta.get("RuntimeSeconds"),
                **{f"QC: {k}": v for k, v in meta.get("QC", {}).items()},
            }))
        for key, title, caption in SECTIONS:
            svg = figures / f"{bids_name}_desc-{key}.svg"
            if svg.is_file():
                parts.append(f"<h2>{title}</h2><p>{caption}</p>"
                             f"<div class='reportlet'>{_svg(svg)}</div>")
        lesions = meta.get("LesionValues") or {}
        if lesions:
            parts.append("<h2>Lesions vs normal-appearing white matter</h2>"
                         "<p>Median synthesized PSR per region and ROC AUC separating NAWM "
                         "from lesions (1 = perfect).</p>" + _table(lesions))
    parts.append("<h2>Errors</h2>")
    if errors:
        parts += [f"<div class='error'>{html.escape(e)}</div>" for e in errors]
    else:
        parts.append("<p>No errors to report.</p>")
    parts.append("</main>")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>demist: sub-{html.escape(subject)}</title><style>{CSS}</style></head>"
            f"<body>{''.join(parts)}</body></html>\n")


def write_subject_reports(output_dir: Path, inputs, *, run_uuid: str,
                          extra_errors: dict[str, list[str]] | None = None) -> list[str]:
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
        page = render_subject_report(output_dir, subject, names, run_uuid=run_uuid, errors=errors)
        atomic_write_text(Path(output_dir) / f"sub-{subject}.html", page)
    return failed
