"""Validate a dataset with the real BIDS validator (bids-validator-deno, offline)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path

from demist_bids.exceptions import BIDSValidationError

LOGGER = logging.getLogger("demist.bids")


def run_validator(dataset: Path, *, timeout: float = 600) -> dict:
    """Run bids-validator-deno on ``dataset`` and return its parsed JSON report.

    Raises:
        BIDSValidationError: the validator is missing or could not read the dataset.
    """
    exe = shutil.which("bids-validator-deno")
    if exe is None:
        raise BIDSValidationError(
            "bids-validator-deno is not installed; install it or pass --skip-bids-validation"
        )
    proc = subprocess.run(
        [exe, "--format", "json", "--ignoreWarnings", str(dataset)],
        capture_output=True, text=True, timeout=timeout, check=False,
    )
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise BIDSValidationError(f"bids-validator-deno could not read {dataset}: {tail[0]}") from exc


def validation_errors(report: dict) -> list[str]:
    """One line per distinct error code: ``CODE (n files): first file``."""
    by_code: dict[str, list[str]] = {}
    for issue in report.get("issues", {}).get("issues", []):
        if issue.get("severity") == "error":
            by_code.setdefault(issue.get("code", "ERROR"), []).append(issue.get("location", ""))
    return [f"{code} ({len(locs)} files, e.g. {locs[0]})" for code, locs in sorted(by_code.items())]


def validate_dataset(dataset: Path) -> None:
    """Raise :class:`BIDSValidationError` (exit 16) when the dataset has validation errors."""
    errors = validation_errors(run_validator(dataset))
    if errors:
        for line in errors:
            LOGGER.error("BIDS validation: %s", line)
        raise BIDSValidationError(
            f"{dataset} failed BIDS validation ({'; '.join(errors[:3])}); "
            "fix the dataset or pass --skip-bids-validation"
        )
    LOGGER.info("%s passed BIDS validation", dataset)
