"""The packaged Nipype plugin files: real plugins accept them, and SLURMGraph runs a graph on SLURM."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

PLUGINS = Path(__file__).resolve().parents[2] / "demist_bids" / "data" / "plugins"


def _load(name: str) -> tuple[str, dict]:
    settings = yaml.safe_load((PLUGINS / name).read_text())
    return settings["plugin"], settings["plugin_args"]


def test_multiproc_gpu_limits():
    """n_gpu_procs caps concurrent GPU nodes; CPUs and memory are left to --nprocs/--mem."""
    from nipype.pipeline.plugins import MultiProcPlugin

    name, args = _load("multiproc_gpu.yml")
    assert name == "MultiProc"
    assert "n_procs" not in args and "memory_gb" not in args
    plugin = MultiProcPlugin(plugin_args={**args, "n_procs": 1})
    try:
        assert plugin.n_gpu_procs == 1 and plugin.raise_insufficient is False
    finally:
        plugin.pool.shutdown()


def test_slurmgraph_file_is_read_by_nipype():
    from nipype.pipeline.plugins import SLURMGraphPlugin

    name, args = _load("slurmgraph.yml")
    assert name == "SLURMGraph"
    plugin = SLURMGraphPlugin(plugin_args=args)
    assert plugin._sbatch_args == args["sbatch_args"]
    assert plugin._dont_resubmit_completed_jobs is True


def _double(x):
    return 2 * x


def _add_one(x):
    return x + 1


def _two_node_graph(base_dir):
    from nipype import Node, Workflow
    from nipype.interfaces.utility import Function

    wf = Workflow(name="plugin_wf", base_dir=str(base_dir))
    double = Node(Function(["x"], ["out"], _double), name="double")
    double.inputs.x = 20
    add = Node(Function(["x"], ["out"], _add_one), name="add_one")
    wf.connect(double, "out", add, "x")
    return wf


def _result(base_dir) -> int:
    from nipype.utils.filemanip import loadpkl

    return loadpkl(base_dir / "plugin_wf" / "add_one" / "result_add_one.pklz").outputs.out


@pytest.mark.slow
def test_slurmgraph_runs_nodes_as_jobs(slurm, tmp_path, monkeypatch):
    """A two-node graph run with the packaged file: each node is a SLURM job, in order."""
    from demist_bids.cluster.graph import submitted_job_names, wait_for_slurm_graph

    for key, value in slurm.env.items():
        monkeypatch.setenv(key, value)
    name, args = _load("slurmgraph.yml")
    _two_node_graph(tmp_path).run(plugin=name, plugin_args=args)  # submits, then returns

    batch = tmp_path / "plugin_wf" / "batch"
    assert submitted_job_names(batch) == ["j0_double", "j1_add_one"]
    queued = slurm.run(["squeue", "-h", "-o", "%i %j", "-n", "j0_double,j1_add_one"]).stdout
    jobs = dict(line.split()[::-1] for line in queued.splitlines())
    assert set(jobs) == {"j0_double", "j1_add_one"}, "each node is its own SLURM job"
    wait_for_slurm_graph(batch, poll=1, timeout=180)
    assert not slurm.run(["squeue", "-h", "-j", ",".join(jobs.values())]).stdout.strip()
    records = slurm.jobs(*jobs.values())
    assert {records[i]["JobState"] for i in jobs.values()} == {"COMPLETED"}
    assert _result(tmp_path) == 41


@pytest.mark.slow
def test_slurm_plugin_blocks_until_done(slurm, tmp_path, monkeypatch):
    """The SLURM plugin submits node by node and returns when the graph is done."""
    for key, value in slurm.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LOGNAME", "demist")  # Nipype's SLURM plugin names jobs after it
    name, args = _load("slurm.yml")
    assert name == "SLURM"
    from nipype import config

    previous = config.get("execution", "poll_sleep_duration")
    config.set("execution", "poll_sleep_duration", "1")
    try:
        _two_node_graph(tmp_path).run(plugin=name, plugin_args=args)
    finally:
        config.set("execution", "poll_sleep_duration", previous)
    assert _result(tmp_path) == 41
