"""The derivatives dataset's own files: ``dataset_description.json``, ``.bidsignore``, ``dseg.tsv``.

Several participant runs may share one output directory (one SLURM task per
subject), so these files are created once, atomically, by whichever run comes
first; later runs never truncate them (``.bidsignore`` is only ever extended,
so an older output folder gains the patterns of newer outputs). It hides what BIDS has no
name for yet (``*_PSRmap``, transforms, reports, logs) so that bids-validator-deno
accepts the dataset (REFERENCE §3). ``dseg.tsv``, the lookup table of every
subject's ``dseg`` labels, sits at the root where BIDS inheritance finds it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from demist_bids import __version__
from demist_bids.derivatives.outputs import DSEG_TSV, bidsignore_patterns, dseg_table
from demist_bids.utils.atomic import atomic_write_if_absent, atomic_write_text

LOGGER = logging.getLogger("demist.derivatives")
CODE_URL = "https://github.com/demist-bids/demist"
BIDS_VERSION = "1.10.0"
BIDSIGNORE = [*bidsignore_patterns(), "*.html", "logs", "log", "figures", "group_*", "models",
              "training"]


def derivative_description(bids_dir: Path, *, container: dict | None = None) -> dict:
    """The ``dataset_description.json`` content for a demist output dataset."""
    generated = {"Name": "demist", "Version": __version__, "CodeURL": CODE_URL}
    if container:
        generated["Container"] = container
    source = {"URL": Path(bids_dir).absolute().as_uri()}
    try:
        raw = json.loads((Path(bids_dir) / "dataset_description.json").read_text())
        if raw.get("DatasetDOI"):
            source["DOI"] = raw["DatasetDOI"]
    except (OSError, json.JSONDecodeError):
        pass
    return {
        "Name": "demist: synthesized qMT pool-size-ratio maps",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [generated],
        "SourceDatasets": [source],
        "DatasetLinks": {"raw": source["URL"]},
        "HowToAcknowledge": "Please cite demist and DEMIST (see logs/CITATION.md).",
    }


def write_dataset_files(output_dir: Path, bids_dir: Path) -> None:
    """Create ``dataset_description.json`` and ``dseg.tsv`` unless they exist; create or complete
    ``.bidsignore``."""
    output_dir = Path(output_dir)
    container = _container_info()
    description = derivative_description(bids_dir, container=container)
    if atomic_write_if_absent(
        output_dir / "dataset_description.json", json.dumps(description, indent=2) + "\n"
    ):
        LOGGER.debug("wrote %s", output_dir / "dataset_description.json")
    merge_bidsignore(output_dir / ".bidsignore", BIDSIGNORE)
    atomic_write_if_absent(output_dir / DSEG_TSV, dseg_table())


def merge_bidsignore(path: Path, patterns: list[str]) -> bool:
    """Create ``.bidsignore`` with ``patterns``, or add those it lacks to an existing one.

    An output folder made by an older demist keeps its lines (and any the user
    added) and gains the patterns of outputs added since (``*_xfm.*``...). The
    file is rewritten atomically and only when a pattern is missing; concurrent
    runs all add the same lines. Returns whether the file changed.
    """
    text = "\n".join(patterns) + "\n"
    if atomic_write_if_absent(path, text):
        return True
    existing = path.read_text()
    present = {line.strip() for line in existing.splitlines()}
    missing = [p for p in patterns if p not in present]
    if not missing:
        return False
    LOGGER.info("adding %s to %s", ", ".join(missing), path)
    atomic_write_text(path, existing.rstrip("\n") + "\n" + "\n".join(missing) + "\n"
                      if existing.strip() else "\n".join(missing) + "\n")
    return True


def _container_info() -> dict | None:
    import os

    if os.environ.get("DEMIST_CONTAINER_TYPE"):
        return {
            "Type": os.environ["DEMIST_CONTAINER_TYPE"],
            "Tag": os.environ.get("DEMIST_CONTAINER_TAG", __version__),
        }
    return None
