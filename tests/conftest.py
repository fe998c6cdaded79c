"""Shared test set-up: quiet, single-threaded, offline, and data paths."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

# Before anything imports nipype/torch: no network checks, no busy-waiting threads
# on a shared 2-core machine (REFERENCE §2: 10-100x slowdowns otherwise).
os.environ.setdefault("NIPYPE_NO_ET", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests using it skip cleanly when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present beside the repository")
    return SHARED_DATA


@pytest.fixture
def small_disk(tmp_path):
    """A 32 MB tmpfs mounted for this test (needs root and a kernel that allows it)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_disk(folder: Path, leave: int) -> None:
    """Fill ``folder``'s filesystem (a :func:`small_disk`) until ``leave`` bytes are free."""
    disk = os.statvfs(folder)
    with open(Path(folder) / "filler", "wb") as fh:
        fh.write(b"\0" * max(0, disk.f_bavail * disk.f_frsize - leave))


@pytest.fixture(autouse=True)
def _offline_templateflow(tmp_path_factory, monkeypatch):
    """Each test session gets its own TemplateFlow home so nothing is fetched or cached globally."""
    home = tmp_path_factory.getbasetemp() / "templateflow"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(home))


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch missing entirely
        has_gpu = False
    if not has_gpu:
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
