"""Place one subject's outputs in the derivatives dataset, all or nothing.

Outputs are staged in a hidden directory next to their destination and only
renamed into place once every file (images, transform and JSON sidecars) has
been written (:func:`~demist_bids.utils.atomic.commit_files`), so a failure
leaves no partial subject behind and a reader never sees a truncated file.
Names come from the declarations in :mod:`.outputs`. A rerun overwrites the
same names with identical content.
"""

from __future__ import annotations

import errno
import functools
import gzip
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from demist_bids.derivatives.outputs import OUTPUTS, declared
from demist_bids.exceptions import DemistIOError
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


DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS}
"""Errors of the output disk itself (full, over quota, failing, read-only): exit 74."""


def _output_errors(write):
    """A full or failing output disk while writing a subject's outputs is exit 74, naming where.

    Each file is whole or absent (all of ``commit_outputs`` or none), so the
    message can say so; the node's crash carries the code to the command line.
    Other errors (a missing source in the work directory) stay crashes.
    """
    @functools.wraps(write)
    def wrapper(output_dir, subject, *args, **kwargs):
        try:
            return write(output_dir, subject, *args, **kwargs)
        except OSError as exc:
            if exc.errno not in DISK_ERRORS:
                raise
            raise DemistIOError(
                f"cannot write the outputs of sub-{subject} into {output_dir}: "
                f"{exc.strerror or exc}; no file there is left half-written") from exc

    return wrapper


@_output_errors
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


@_output_errors
def copy_reportlets(output_dir: Path, subject: str, reportlets: dict[str, Path], bids_name: str) -> None:
    """Copy reportlets to ``OUT/sub-X/figures/<bids_name>_desc-<key>_<kind>.svg`` atomically."""
    figures = Path(output_dir) / f"sub-{subject}" / "figures"
    for key, src in reportlets.items():
        if src and Path(src).exists():
            ext = "".join(Path(src).suffixes[-1:]) or ".svg"
            atomic_copy(Path(src), figures / f"{bids_name}_desc-{key}{ext}")
