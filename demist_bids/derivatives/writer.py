"""Place one subject's outputs in the derivatives dataset, all or nothing.

Outputs are staged in a hidden directory next to their destination and only
renamed into place once every file (images and JSON sidecars) has been written,
so a failure leaves no partial subject behind and a reader never sees a
truncated file. Renames are atomic on one filesystem; a rerun overwrites the
same names with identical content.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from demist_bids.utils.atomic import atomic_copy


@dataclass
class OutputItem:
    """One image to write, with the entities that name it and its sidecar."""

    source: Path
    suffix: str
    desc: str | None = None
    res: str | None = None
    metadata: dict = field(default_factory=dict)

    def filename(self, bids_name: str) -> str:
        parts = [bids_name]
        if self.res:
            parts.append(f"res-{self.res}")
        if self.desc:
            parts.append(f"desc-{self.desc}")
        ext = ".nii.gz" if str(self.source).endswith(".gz") else Path(self.source).suffix
        return "_".join(parts) + f"_{self.suffix}{ext}"


def anat_dir(output_dir: Path, subject: str, session: str | None) -> Path:
    """``OUT/sub-X[/ses-Y]/anat``."""
    path = Path(output_dir) / f"sub-{subject}"
    if session:
        path = path / f"ses-{session}"
    return path / "anat"


def commit_outputs(
    output_dir: Path, subject: str, session: str | None, items: list[OutputItem]
) -> list[Path]:
    """Write every item and its sidecar under ``OUT/sub-X[/ses-Y]/anat``; return the image paths."""
    bids_name = f"sub-{subject}" + (f"_ses-{session}" if session else "")
    dest_dir = anat_dir(output_dir, subject, session)
    dest_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{uuid.uuid4().hex[:8]}-", dir=dest_dir))
    try:
        staged: list[tuple[Path, Path]] = []
        for item in items:
            name = item.filename(bids_name)
            shutil.copyfile(item.source, staging / name)
            sidecar = name.split(".nii")[0] + ".json"
            (staging / sidecar).write_text(json.dumps(item.metadata, indent=2, default=str) + "\n")
            staged += [(staging / sidecar, dest_dir / sidecar), (staging / name, dest_dir / name)]
        for src, dest in staged:
            os.chmod(src, 0o644)
            os.replace(src, dest)
        return [dest for _, dest in staged if not dest.name.endswith(".json")]
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def copy_reportlets(output_dir: Path, subject: str, reportlets: dict[str, Path], bids_name: str) -> None:
    """Copy reportlets to ``OUT/sub-X/figures/<bids_name>_desc-<key>_<kind>.svg`` atomically."""
    figures = Path(output_dir) / f"sub-{subject}" / "figures"
    for key, src in reportlets.items():
        if src and Path(src).exists():
            ext = "".join(Path(src).suffixes[-1:]) or ".svg"
            atomic_copy(Path(src), figures / f"{bids_name}_desc-{key}{ext}")
