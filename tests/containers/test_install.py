"""The image's install steps, replayed from the Dockerfile in a fresh virtual environment.

What is replayed comes from the Dockerfile itself: the wheel stage's COPY lines
(through .dockerignore) and its ``pip wheel`` RUN, the final stage's RUN that
installs ``${WHEELS}``, and the final stage's ENV. Then ``demist --version`` and
``demist-demo`` run as the container would: with HOME, the installed package,
the Python installation, the TemplateFlow folder and the source checkout all
mounted read-only (a private mount namespace), writing only to the output and
to the scratch folder that stands for the container's /tmp.

Choice: the venv is made with ``--system-site-packages`` so torch and the other
dependencies come from the machine instead of being downloaded again; the test
checks that ``demist_bids`` itself is imported from the venv's wheel install,
not from the checkout. Torch is not reinstalled: the Dockerfile's pinned
TORCH_VERSION is checked against the torch the test runs with instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.containers.recipe import parse_dockerfile, replay_copies, stage

ROOT = Path(__file__).resolve().parents[2]
READ_ONLY_SYSTEM = ("/usr", "/etc", "/var", "/opt", "/root", "/home", "/srv", "/work")

# Mount the given folders read-only in a private mount namespace, then run the command.
READ_ONLY_EXEC = r"""
set -e
IFS=: read -r -a paths <<< "$RO_PATHS"
for p in "${paths[@]}"; do
  mount --bind "$p" "$p"
  mount -o remount,ro,bind "$p" "$p"
done
unset RO_PATHS
exec "$@"
"""

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def _bash(command: str, cwd: Path, env: dict[str, str]) -> None:
    res = subprocess.run(["bash", "-ec", command], cwd=cwd, env=env, capture_output=True, text=True)
    assert res.returncode == 0, f"{command}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"


def _read_only(paths: list[Path]) -> list[str]:
    """The unshare prefix that runs a command with ``paths`` mounted read-only."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("read-only mounts need root and unshare")
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespace here: {probe.stderr.decode().strip()}")
    return ["unshare", "-m", "--propagation", "private", "bash", "-c", READ_ONLY_EXEC, "read-only"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A venv holding demist installed the way the image installs it."""
    tmp = tmp_path_factory.mktemp("image")
    stages = parse_dockerfile(ROOT / "Dockerfile")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    base_env["PATH"] = f"{venv / 'bin'}:{os.environ['PATH']}"

    # Stage "wheel": its COPY lines from the build context, then its RUN with ${WHEELS}.
    wheel_stage = stage(stages, "wheel")
    workdir = replay_copies(wheel_stage, ROOT, tmp / "wheel-stage")
    wheels = tmp / "wheels"
    runs = [r for r in wheel_stage.all("RUN") if "${WHEELS}" in r]
    assert runs, "the wheel stage builds into ${WHEELS}"
    for run in runs:
        _bash(run, workdir, {**base_env, "WHEELS": str(wheels)})
    assert len(list(wheels.glob("demist_bids-*.whl"))) == 1

    # Final stage: COPY --from=wheel /wheels ${WHEELS}, then the RUN lines that install it.
    # This machine already has demist_bids (the editable checkout) and every dependency
    # in the system site-packages the venv sees: pip is told to install the wheel anyway
    # and to leave the dependencies, which test_dependencies_are_satisfied checks instead.
    final = stages[-1]
    copied = tmp / "final-wheels"
    shutil.copytree(wheels, copied)
    runs = [r for r in final.all("RUN") if "${WHEELS}" in r]
    assert runs, "the final stage installs the wheel from ${WHEELS}"
    pip_env = {**base_env, "WHEELS": str(copied), "PIP_FORCE_REINSTALL": "1", "PIP_NO_DEPS": "1"}
    for run in runs:
        _bash(run, tmp, pip_env)
    return venv, final, stages


def test_dependencies_are_satisfied(installed):
    """What pip left alone is there in versions the wheel accepts."""
    venv, _, _ = installed
    check = r"""
import importlib.metadata as md
from packaging.requirements import Requirement
bad = []
for text in md.requires("demist_bids") or []:
    req = Requirement(text)
    if req.marker and not req.marker.evaluate({"extra": ""}):
        continue
    try:
        version = md.version(req.name)
    except md.PackageNotFoundError:
        bad.append(f"{req}: missing")
        continue
    if not req.specifier.contains(version, prereleases=True):
        bad.append(f"{req}: {version}")
print(md.distribution("demist_bids").locate_file(""))
assert not bad, bad
"""
    res = subprocess.run([str(venv / "bin" / "python"), "-c", check], capture_output=True,
                         text=True, cwd=venv.parent)  # not the checkout, whose egg-info would be found
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().startswith(str(venv)), "metadata read from the venv's install"


def test_torch_pin_is_the_tested_torch(installed):
    import torch

    _, _, stages = installed
    assert stage(stages, "torch").args()["TORCH_VERSION"] == torch.__version__.split("+")[0]


def test_version_and_demo_read_only(installed, tmp_path):
    venv, final, _ = installed
    scratch, out, home, tflow = (tmp_path / n for n in ("tmp", "out", "home", "templateflow"))
    for folder in (scratch, out, home):
        folder.mkdir()

    # The image's ENV; what it puts under /tmp goes to the scratch folder instead.
    env = {key: value.replace("/tmp", str(scratch), 1) if value.startswith("/tmp") else value
           for key, value in final.env().items()}
    env.update(
        # the venv first; then where the system site-packages keep their scripts (the
        # validator), as the image has every installed script on its PATH
        PATH=f"{venv / 'bin'}:{Path(sys.base_prefix) / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        HOME=str(home),
        TEMPLATEFLOW_HOME=str(tflow),
        TMPDIR=str(scratch),
        OMP_WAIT_POLICY="PASSIVE",
    )
    # The image ships a populated TemplateFlow home: here its offline skeleton, made before
    # the folder turns read-only (the package falls back to nilearn's template, as offline).
    subprocess.run([str(venv / "bin" / "python"), "-c", "import templateflow"], env=env, check=True)

    read_only = [venv, home, tflow, Path(sys.base_prefix), ROOT]
    read_only += [Path(p) for p in READ_ONLY_SYSTEM if Path(p).is_dir()]
    prefix = _read_only(read_only)
    env["RO_PATHS"] = ":".join(str(p) for p in read_only)

    where = subprocess.run(
        [*prefix, "python", "-c", "import demist_bids; print(demist_bids.__file__)"],
        env=env, capture_output=True, text=True, check=True, cwd=scratch,
    ).stdout.strip()
    assert where.startswith(str(venv)), f"demist_bids came from {where}, not the installed wheel"

    version = subprocess.run([*prefix, "demist", "--version"], env=env, capture_output=True,
                             text=True, timeout=120, cwd=scratch)
    assert version.returncode == 0, version.stderr
    from demist_bids import __version__

    assert __version__ in version.stdout + version.stderr

    demo = subprocess.run([*prefix, "demist-demo", str(out)], env=env, capture_output=True,
                          text=True, timeout=1500, cwd=scratch)
    assert demo.returncode == 0, demo.stdout[-4000:] + demo.stderr[-4000:]
    deriv = out / "derivatives" / "demist"
    assert (deriv / "dataset_description.json").is_file()
    maps = sorted(deriv.glob("sub-*/**/*_desc-synth_PSRmap.nii.gz"))
    assert len(maps) >= 1, sorted(p.relative_to(deriv).as_posix() for p in deriv.rglob("*"))
    assert list(deriv.glob("group_*.tsv")), "the demo's group level wrote its table"
    assert not any(home.iterdir()), "nothing was written to HOME"
