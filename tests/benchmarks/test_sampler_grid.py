"""benchmarks/sampler_grid.py: the spec syntax the demo's sampler choice is written in."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


def test_specs_parse_and_bad_ones_are_refused():
    from sampler_grid import parse_spec

    assert parse_spec("20:4:1.5:1") == {"steps": 20, "samples": 4, "guidance": 1.5, "start": 1.0}
    assert parse_spec("nodiff") is None
    with pytest.raises(SystemExit, match="steps:samples:guidance:start"):
        parse_spec("20:4")
