"""Facts about a model directory that need no torch: its checksums and model card."""

from __future__ import annotations

import hashlib
from pathlib import Path

STUDENT_DIR = "student"
"""Subdirectory of a model directory holding its distilled student."""

CONFIG_NAME = "config.json"
"""The file of a model directory holding its ModelConfig (architecture, scales, sampler, card)."""

WEIGHTS_SUMS = "SHA256SUMS"
"""The weights files' SHA256, in ``sha256sum`` format, written beside them by ``save_model``.

Only the weights are listed: ``config.json`` changes with every card or sampler
update and is checked by its content instead (:mod:`demist_bids.models.validation`).
``sha256sum -c SHA256SUMS`` inside the directory checks them by hand.
"""


def _update(digest, path: Path) -> None:
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)


def file_sha256(path: Path) -> str:
    """SHA256 of one file, read in chunks."""
    digest = hashlib.sha256()
    _update(digest, Path(path))
    return digest.hexdigest()


def directory_sha256(directory: Path, *, exclude: tuple[str, ...] = ()) -> str:
    """SHA256 over the names and bytes of every file in the model directory, in sorted order.

    The one model-directory checksum (sidecars, saved models, a student's record of
    its teacher). ``exclude`` names top-level subdirectories left out: a student
    records its teacher's digest without ``student/``, which it then joins.
    """
    digest = hashlib.sha256()
    root = Path(directory)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root)
        if relative.parts[0] in exclude:
            continue
        digest.update(relative.as_posix().encode() + b"\0")
        _update(digest, path)
        digest.update(b"\0")
    return digest.hexdigest()


def write_weights_sums(directory: Path) -> Path:
    """Record the SHA256 of every ``*.safetensors`` file of ``directory`` in :data:`WEIGHTS_SUMS`."""
    directory = Path(directory)
    lines = [f"{file_sha256(p)}  {p.name}\n" for p in sorted(directory.glob("*.safetensors"))]
    path = directory / WEIGHTS_SUMS
    path.write_text("".join(lines))
    return path


def read_weights_sums(directory: Path) -> dict[str, str] | None:
    """File name -> recorded SHA256, or None for a model saved before checksums were recorded.

    Raises:
        ValueError: a line is not ``<64 hex digits>  <name>``.
    """
    path = Path(directory) / WEIGHTS_SUMS
    if not path.is_file():
        return None
    sums = {}
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name or set(digest.lower()) - set("0123456789abcdef"):
            raise ValueError(f"{path} line {number} is not '<sha256>  <file name>'")
        sums[name.strip()] = digest.lower()
    return sums


def card_of(card) -> dict:
    """A model card (``ModelConfig.card``, parsed once by
    :func:`demist_bids.models.validation.check_model`) as a dict: empty when absent, a text
    card as its ``summary``."""
    if not card:
        return {}
    return card if isinstance(card, dict) else {"summary": str(card)}


def student_dir(model_dir: Path) -> Path | None:
    """The distilled student of ``model_dir``, or None when it has none."""
    candidate = Path(model_dir) / STUDENT_DIR
    return candidate if (candidate / CONFIG_NAME).is_file() else None
