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
