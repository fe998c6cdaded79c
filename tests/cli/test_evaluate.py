"""``demist-evaluate``: the external validation's console script and its usage errors."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _evaluate(*args: str) -> subprocess.CompletedProcess:
    code = f"from demist_bids.cli.evaluate import main; main({list(args)!r})"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["--train-regressor"], "--train-regressor needs --regressor"),
    (["--seed", "x"], "--seed: invalid int value"),
])
def test_usage_errors_are_exit_64_with_one_line(tmp_path, args, message):
    done = _evaluate("--model", str(tmp_path), "--train-bids", str(tmp_path), "--test-bids", str(tmp_path),
                     "--out", str(tmp_path / "out"), *args)
    assert done.returncode == 64
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_help_needs_no_heavy_imports():
    code = ("import sys\nfrom demist_bids.cli.evaluate import main\ntry:\n    main(['--help'])\n"
            "except SystemExit as exc:\n    print('exit', exc.code, 'torch' in sys.modules, 'monai' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "--paper-samples" in done.stdout and "exit 0 False False" in done.stdout
