"""Benchmarks write only under a temporary or a given folder, never into the working tree.

``sampler_speed.py`` once left ``benchmark-work/`` in the repository root. Nothing
heavy runs here: the scripts' parsers are read, and one phantom run is stopped
as soon as it has its work folder.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = sorted((REPO / "benchmarks").glob("*.py"))
PATH_OPTION = re.compile(r"work|dir|out|cache", re.IGNORECASE)


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_no_folder_option_defaults_to_a_relative_path(script):
    """A folder option has no default (temporary or required) or an absolute one outside the repo."""
    for call in ast.walk(ast.parse(script.read_text())):
        if not (isinstance(call, ast.Call) and getattr(call.func, "attr", "") == "add_argument"):
            continue
        names = [a.value for a in call.args if isinstance(a, ast.Constant)]
        default = next((k.value for k in call.keywords if k.arg == "default"), None)
        if not any(PATH_OPTION.search(str(n)) for n in names) or default is None:
            continue
        value = ast.literal_eval(default) if isinstance(default, ast.Constant) else None
        assert not isinstance(value, str) or (Path(value).is_absolute() and REPO not in Path(value).parents), \
            f"{script.name} {names}: default {value!r} writes into the working directory"


@pytest.mark.parametrize("name, option", [("sampler_speed", "phantom_work"), ("preproc_accuracy", "work")])
def test_work_folder_defaults_to_a_temporary_one(name, option):
    assert getattr(_script(name).build_parser().parse_args([]), option) is None


def test_sampler_speed_phantom_work_is_temporary_and_removed(monkeypatch):
    module = _script("sampler_speed")
    seen = []

    class Stop(Exception):
        pass

    def phantom_subject(work, seed, scale):
        seen.append((work, work.is_dir()))
        raise Stop

    monkeypatch.setattr(module, "phantom_subject", phantom_subject)
    with pytest.raises(Stop):
        module.main(["--preset", "small", "--threads", "1"])
    (work, existed), = seen
    assert existed and REPO not in work.parents and work != REPO
    assert not work.exists()  # removed on the way out
    assert not (REPO / "benchmark-work").exists()
