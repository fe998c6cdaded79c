"""Files shipped inside the package: the demo model, citation boilerplate, plugin files."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def data_path(*parts: str) -> Path:
    """Path of a packaged data file (the package is installed unzipped)."""
    return Path(str(resources.files(__name__).joinpath(*parts)))


def demo_model_dir() -> Path:
    """The embedded demonstration model (trained on synthetic phantoms)."""
    return data_path("models", "demo")
