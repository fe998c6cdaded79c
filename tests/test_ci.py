"""The README's two set-up commands and .ci/run stay in step."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_the_readme_opens_with_exactly_two_commands_demo_then_tests():
    demo, tests = _readme_commands()
    assert "demist-demo" in demo and "pytest" in tests


def test_ci_runs_the_readmes_test_command_then_the_slow_tests():
    tests = _readme_commands()[1]
    ci = (ROOT / ".ci" / "run").read_text()
    pytest_part = tests[tests.index("python -m pytest"):]
    assert pytest_part in ci
    assert '-m "not gpu and not slow"' in pytest_part  # the default suite leaves the slow tests out
    assert re.search(r'python -m pytest -m "slow and not gpu"', ci)  # ... and CI runs them
    assert ci.index(pytest_part) < ci.index('-m "slow and not gpu"')
