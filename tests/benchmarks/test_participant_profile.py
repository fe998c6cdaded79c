"""benchmarks/participant_profile.py on a tiny phantom subject with the embedded demo model.

The real participant level runs (Nipype, SimpleITK, the sampler); the test checks
that the node table accounts for the run's wall time, that the per-pass table
has one row per denoising step and the windows the lever line predicts, and the
last line.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "participant_profile.py"
LAST_LINE = re.compile(
    r"^total_s=(?P<total>[0-9.]+) preprocessing_s=(?P<pre>[0-9.]+) synthesis_s=(?P<synth>[0-9.]+) "
    r"per_scan_s=(?P<scan>[0-9.]+)$"
)
ROW = re.compile(r"^(?P<name>\s*\S.*?)\s+(?P<calls>\d+|-)\s+(?P<windows>\d+|whole|-)\s+(?P<cpu>[0-9.]+|-)\s+"
                 r"(?P<seconds>[0-9.]+)\s+(?P<share>[0-9.]+)%$")


def _script():
    spec = importlib.util.spec_from_file_location("participant_profile", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_profile_of_a_phantom_run(tmp_path):
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--phantom", "--phantom-subjects", "1", "--phantom-scale", "0.35",
         "--nprocs", "1", "--omp-nthreads", "1", "--poll-sleep", "0.2", "--work", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    assert "nipype.workflow" not in run.stdout  # the run's logging went to stderr
    last = LAST_LINE.match(lines[-1])
    assert last, lines[-1]
    total, pre, synth = (float(last[k]) for k in ("total", "pre", "synth"))
    assert float(last["scan"]) == total  # one scan
    assert 0 < pre and 0 < synth and pre + synth <= total

    # the node table: one row per node, and (one process: nodes one at a time) the rows add up to the wall time
    start = lines.index(next(line for line in lines if line.startswith("node ")))
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("(sum)"))
    nodes = {}
    for line in lines[start + 1:end]:
        name, cpu, seconds, share = line.rsplit(None, 3)
        nodes[name.strip()] = (float(seconds), float(share.rstrip("%")))
        assert cpu == "-" if name.startswith("(") else float(cpu) >= 0  # CPU seconds of every node
    assert {"single_subject_sub_01_wf/synthesis_wf/synthesize",
            "single_subject_sub_01_wf/synthesis_wf/anat_preproc_wf/conform_wf/n4_t1w",
            "single_subject_sub_01_wf/synthesis_wf/anat_preproc_wf/brain_mask_wf/brain_mask",
            "single_subject_sub_01_wf/commit"} <= set(nodes)
    assert abs(sum(share for _, share in nodes.values()) - 100) < 0.1 * len(nodes)
    summed = float(lines[end].split()[-2])
    assert abs(summed - total) < 0.2
    assert nodes["single_subject_sub_01_wf/synthesis_wf/synthesize"][0] == pytest.approx(synth, abs=0.051)
    assert sum(s for name, (s, _) in nodes.items() if "/anat_preproc_wf/" in name) == \
        pytest.approx(pre, abs=0.1 + 0.01 * len(nodes))

    # the per-pass table: as many step rows as the node ran steps, windows as the lever line says
    info = json.loads(next(tmp_path.rglob("synthesize/synthesis.json")).read_text())
    first = lines.index(next(line for line in lines if line.startswith("# synthesis of sub_01")))
    rows = {}
    for line in lines[first + 2:]:
        match = ROW.match(line)
        if not match:
            break
        rows[match["name"].strip()] = match
    steps = [name for name in rows if name.startswith("step ")]
    assert len(steps) == info["steps"] >= 1
    encoder, decoder = rows["conditioning encoder"], rows["PSR decoder"]
    overlap = f"overlap {info['autoencoder_overlap']:g}: "
    lever = next(line for line in lines if line.startswith("# autoencoder windows"))
    expected = re.search(re.escape(overlap) + r"(\d+)\+(\d+)", lever)
    assert (int(encoder["windows"]), int(decoder["windows"])) == (int(expected[1]), int(expected[2]))
    assert int(encoder["calls"]) == -(-int(encoder["windows"]) // info["window_batch"])
    node_seconds = nodes["single_subject_sub_01_wf/synthesis_wf/synthesize"][0]
    passes = [float(rows[name]["seconds"]) for name in ("conditioning encoder", "PSR decoder", *steps)]
    assert all(s > 0 for s in passes) and sum(passes) <= node_seconds
    assert float(decoder["cpu"]) > 0 and float(encoder["cpu"]) > 0
    box = "x".join(str(b - a) for a, b in info["box"])
    assert any(line.startswith(f"# cropping box {box} of the model grid") for line in lines)


def test_absent_real_data_falls_back_to_a_phantom(tmp_path, capsys):
    module = _script()
    module.OPENMS = tmp_path / "absent"
    args = SimpleNamespace(bids=None, phantom=False, phantom_subjects=1, phantom_seed=3, phantom_scale=0.35)
    bids, source = module._choose_input(args, tmp_path)
    assert "is absent" in capsys.readouterr().out and "demist-phantom" in source
    assert (bids / "sub-01" / "anat").is_dir()


def test_union_of_node_intervals():
    union = _script().union_seconds
    assert union([(0, 2), (1, 3), (5, 6)]) == 4
    assert union([]) == 0


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_the_recorder_passes_every_sampler_argument_through(tmp_path, blend):
    """The recorder wraps the sampler's own functions: a synthesis under it gives the same map, with a
    window record for each autoencoder window, whatever arguments the sampler passes (its blend included)."""
    import numpy as np

    from demist_bids.inference.sampler import synthesize
    from demist_bids.models.demist import build_model
    from tests.models.tiny import pretend_pretrained, pretend_trained_streams, tiny_config

    model = build_model(tiny_config("full", psr_scale=0.3))
    pretend_pretrained(model)
    pretend_trained_streams(model)
    model.config.sampling.autoencoder_blend = blend
    cond = np.random.default_rng(0).random((2, 24, 24, 24)).astype(np.float32)
    plain = synthesize(model, cond, steps=1, precision="fp32")
    recorder = _script().PassRecorder(tmp_path / "passes.jsonl")
    with recorder:
        recorded = synthesize(model, cond, steps=1, precision="fp32")
    np.testing.assert_array_equal(recorded.mean, plain.mean)
    kinds = [r["pass"] for r in recorder.records()]
    assert kinds.count("window") >= 2 and {"encoder", "decoder", "step"} <= set(kinds)
