"""Place one subject's outputs in the derivatives dataset, all or nothing.

Outputs are staged in a hidden directory next to their destination and only
renamed into place once every file (images, transform and JSON sidecars) has
been written (:func:`~demist_bids.utils.atomic.commit_files`), so a failure
leaves no partial subject behind and a reader never sees a truncated file.
Names come from the declarations in :mod:`.outputs`. A rerun overwrites the
same names with identical content.
"""

from __future__ import annotations

import gzip
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from demist_bids.derivatives.outputs import OUTPUTS, declared
from demist_bids.utils.atomic import atomic_copy, commit_files


@dataclass
class OutputItem:
    """One declared output (:data:`~.outputs.OUTPUTS` key, or a template one's from
    :func:`~.outputs.in_space`) to write, with its sidecar."""

    key: str
    source: Path
    metadata: dict = field(default_factory=dict)


def anat_dir(output_dir: Path, subject: str, session: str | None) -> Path:
    """``OUT/sub-X[/ses-Y]/anat``."""
    return Path(output_dir) / OUTPUTS["psr"].path(subject, session).parent


def copy_file(src: Path, dest: Path) -> None:
    """Copy ``src`` to ``dest``, gzip-compressing (reproducibly) when only ``dest`` is ``.gz``."""
    if str(dest).endswith(".gz") and not str(src).endswith(".gz"):
        with open(src, "rb") as fin, gzip.GzipFile(dest, "wb", compresslevel=6, mtime=0) as fout:
            shutil.copyfileobj(fin, fout)
    else:
        shutil.copyfile(src, dest)


def write_json(metadata: dict):
    """A writer for :func:`~demist_bids.utils.atomic.commit_files` saving ``metadata``."""
    text = json.dumps(metadata, indent=2, default=str) + "\n"
    return lambda path: Path(path).write_text(text)


def commit_outputs(
    output_dir: Path, subject: str, session: str | None, items: list[OutputItem]
) -> list[Path]:
    """Write every item and its sidecar under ``OUT/sub-X[/ses-Y]/anat``; return the file paths."""
    writers = {}
    for item in items:
        out = declared(item.key)
        name = out.path(subject, session).name
        writers[out.sidecar_path(subject, session).name] = write_json(item.metadata)
        writers[name] = lambda path, src=item.source: copy_file(src, path)
    written = commit_files(anat_dir(output_dir, subject, session), writers)
    return [path for path in written if path.suffix != ".json"]


def copy_reportlets(output_dir: Path, subject: str, reportlets: dict[str, Path], bids_name: str) -> None:
    """Copy reportlets to ``OUT/sub-X/figures/<bids_name>_desc-<key>_<kind>.svg`` atomically."""
    figures = Path(output_dir) / f"sub-{subject}" / "figures"
    for key, src in reportlets.items():
        if src and Path(src).exists():
            ext = "".join(Path(src).suffixes[-1:]) or ".svg"
            atomic_copy(Path(src), figures / f"{bids_name}_desc-{key}{ext}")
