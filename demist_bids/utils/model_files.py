"""Facts about a model directory that need no torch: its checksum and model card."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def directory_sha256(directory: Path) -> str:
    """SHA256 over the names and bytes of every file in the model directory, in sorted order.

    The same digest as :func:`demist_bids.models.io.model_sha256`, without importing torch.
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def read_card(directory: Path) -> dict:
    """The model card stored in ``config.json`` (``card`` key), or an empty dict."""
    try:
        config = json.loads((Path(directory) / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    card = config.get("card") or config.get("model_card") or {}
    return card if isinstance(card, dict) else {"summary": str(card)}
