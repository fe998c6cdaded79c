"""benchmarks/window_batch.py on a small volume: both runs agree, the last line parses."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "window_batch.py"
LAST_LINE = re.compile(
    r"^windows=(\d+) baseline_s=[0-9.]+ batched_s=[0-9.]+ speedup=[0-9.]+ max_abs_diff=([0-9.e+-]+)$")


def test_batched_and_single_windows_agree():
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--preset", "small", "--shape", "48", "48", "48", "--patch", "32",
         "--threads", "1"],
        capture_output=True, text=True, timeout=600, check=True,
    )
    match = LAST_LINE.match(run.stdout.strip().splitlines()[-1])
    assert match, run.stdout
    windows, diff = int(match.group(1)), float(match.group(2))
    assert windows == 2 * 2**3  # 48 voxels in 32-voxel windows at overlap 0.5: 2 per axis, encode + decode
    assert diff < 1e-4
