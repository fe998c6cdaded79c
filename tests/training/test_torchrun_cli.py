"""``torchrun -m demist_bids BIDS OUT train``: two gloo ranks, identical weights after every stage."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_cli_train_under_torchrun(tmp_path):
    from demist_bids.phantom.cohort import generate_cohort

    generate_cohort(tmp_path / "bids", subjects=2, seed=11, scale=0.3, control_fraction=0.0)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NIPYPE_NO_ET": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
           "-m", "demist_bids", str(tmp_path / "bids"), str(tmp_path / "out"), "train",
           "-w", str(tmp_path / "work"), "--skip-bids-validation", "--preset", "small", "--folds", "1",
           "--max-steps", "2"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    stages = tmp_path / "out" / "training" / "all"
    for stage in ("ae", "align", "backbone", "diffusion-demist"):
        digests = {(stages / stage / f"weights-rank{r}.sha256").read_text() for r in (0, 1)}
        assert len(digests) == 1, stage
    assert (tmp_path / "out" / "model" / "config.json").exists()
