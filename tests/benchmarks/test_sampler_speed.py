"""benchmarks/sampler_speed.py end to end on a tiny model: options, table, the last line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from demist_bids.models.demist import build_model
from demist_bids.models.io import read_model_config, save_model, write_model_config
from tests.models.tiny import pretend_pretrained, pretend_trained_streams, tiny_config

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "sampler_speed.py"
LAST_LINE = re.compile(
    r"^speedup=[0-9.]+ psnr_drop_db=-?[0-9.]+ peak_mem_gb=[0-9.]+ reference_psnr_db=-?[0-9.]+ option=\S+$"
)


def test_benchmark_runs_every_option_and_ends_with_the_summary_line(tmp_path):
    model = build_model(tiny_config("full", psr_scale=0.3))
    pretend_pretrained(model)
    pretend_trained_streams(model)
    directory = save_model(model, tmp_path / "model")
    config = read_model_config(directory)
    config.sampling.start = 0.5  # the defaults then add options from the noised conditioning latent
    write_model_config(directory, config)

    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", str(directory), "--shape", "32", "32", "32",
         "--synthetic-head", "--reference-steps", "8", "--options", "ddim:4,ddim:2/0.5", "--threads", "1", "--write-choice"],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.strip().splitlines()
    rows = {line.split()[0]: line.split() for line in lines if re.match(r"^(ddpm|ddim|dpm)", line)}
    assert set(rows) == {"ddpm:8", "ddim:4", "ddim:2/0.5"}
    assert rows["ddpm:8"][4] == "nan"  # the reference has no PSNR against itself
    assert float(rows["ddim:2/0.5"][4]) > 0  # every option is measured against the reference
    assert LAST_LINE.match(lines[-1]), lines[-1]
    recorded = json.loads((directory / "config.json").read_text())
    if "# recorded" in run.stdout:  # the choice (with its start) went into the model config
        chosen = recorded["card"]["sampler_benchmark"]["choice"]
        assert chosen in rows
        assert recorded["sampling"]["start"] == (0.5 if chosen.endswith("/0.5") else 1.0)
    else:
        assert "nothing meets the bar" in run.stdout
        assert "sampler_benchmark" not in recorded["card"]


def test_a_student_is_scored_against_the_teachers_ddim50(tmp_path):
    """Issue 19's bar is printed for the student: its drop below DDIM-50 and its speed-up."""
    import copy

    model = build_model(tiny_config("full", psr_scale=0.3))
    pretend_pretrained(model)
    pretend_trained_streams(model)
    directory = save_model(model, tmp_path / "model")
    student = copy.deepcopy(model)
    student.config.sampling.distilled_steps = student.config.sampling.steps = 2
    save_model(student, directory / "student")

    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", str(directory), "--shape", "32", "32", "32",
         "--synthetic-head", "--reference-steps", "8", "--options", "ddim:50,distilled", "--threads", "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    rows = {line.split()[0]: line.split() for line in run.stdout.splitlines()
            if re.match(r"^(ddpm|ddim|distilled)", line)}
    assert set(rows) == {"ddpm:8", "ddim:50", "distilled:2"}
    target = [line for line in run.stdout.splitlines() if line.startswith("# student distilled:2")]
    assert len(target) == 1 and "below the teacher's ddim:50" in target[0]
    drop = float(rows["ddim:50"][6]) - float(rows["distilled:2"][6])
    assert f"{drop:+.2f} dB below" in target[0]
    assert "x faster than ddpm:8" in target[0] and "NOT met" in target[0]  # 8 reference steps: no 100x
    assert LAST_LINE.match(run.stdout.strip().splitlines()[-1])
