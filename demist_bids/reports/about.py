"""The run record behind a subject report's About section.

Like fMRIPrep's ``desc-about`` reportlet, it is written beside the other
reportlets (``OUT/sub-X/figures/<name>_desc-about.json``) by the run that
worked on the subject, so ``--reports-only`` can rebuild the page later without
the run's configuration at hand.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from demist_bids import __version__
from demist_bids.utils.atomic import atomic_write_text
from demist_bids.utils.devices import describe_device

PACKAGES = ("nipype", "niworkflows", "torch", "monai", "nibabel", "SimpleITK", "pybids")
"""Libraries whose versions the About section lists."""


def about_path(output_dir: Path, subject: str, bids_name: str) -> Path:
    """``OUT/sub-X/figures/<bids_name>_desc-about.json``."""
    return Path(output_dir) / f"sub-{subject}" / "figures" / f"{bids_name}_desc-about.json"


def _versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def run_record(config, *, device: str) -> dict:
    """What the About section shows: command line, version, run id, date, environment, device."""
    ny = config.nipype
    environment = {
        "Python": platform.python_version(),
        "Platform": platform.platform(),
        "CPUs": os.cpu_count(),
        "Processes (--nprocs)": ny.nprocs,
        "Threads per process (--omp-nthreads)": ny.omp_nthreads,
        "Memory limit (GB)": ny.mem_gb or "none",
        "Nipype plugin": ny.plugin,
        "Container": (f"{os.environ['DEMIST_CONTAINER_TYPE']} "
                      f"{os.environ.get('DEMIST_CONTAINER_TAG', __version__)}"
                      if os.environ.get("DEMIST_CONTAINER_TYPE") else "none"),
        **{f"{name} version": version for name, version in _versions().items()},
    }
    return {
        "CommandLine": config.execution.cmdline or " ".join(["demist", *sys.argv[1:]]),
        "Version": __version__,
        "RunID": config.execution.run_uuid,
        "Date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "Device": describe_device(device),
        "Environment": environment,
    }


def write_run_record(output_dir: Path, subject: str, bids_name: str, record: dict) -> Path:
    """Save one subject/session's record atomically."""
    text = json.dumps(record, indent=2, default=str) + "\n"
    return atomic_write_text(about_path(output_dir, subject, bids_name), text)


def read_run_record(output_dir: Path, subject: str, bids_name: str) -> dict:
    """The saved record, or an empty dict (outputs of an older demist, or never run)."""
    try:
        record = json.loads(about_path(output_dir, subject, bids_name).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return record if isinstance(record, dict) else {}
