"""The scheduler's poll: demist's 0.1 s default, and a --use-plugin file's poll_sleep_duration."""

from __future__ import annotations

import pytest


def _double(x):
    return 2 * x


@pytest.fixture
def restore_nipype_execution():
    from nipype import config as nipype_config

    saved = dict(nipype_config._sections["execution"])
    yield nipype_config
    nipype_config._sections["execution"] = saved


@pytest.mark.parametrize(("plugin_args", "expected"), [({}, 0.1), ({"poll_sleep_duration": 0.5}, 0.5)])
def test_the_poll_reaches_nipype_and_not_the_plugin(tmp_path, restore_nipype_execution, plugin_args, expected):
    from nipype import Node, Workflow
    from nipype.interfaces.utility import Function

    from demist_bids.cli.participant import _run_workflow
    from demist_bids.config import Config

    config = Config()
    config.execution.output_dir = tmp_path / "out"
    config.nipype.plugin = "MultiProc"
    config.nipype.nprocs = 1
    config.nipype.plugin_args = dict(plugin_args)
    wf = Workflow("poll", base_dir=str(tmp_path / "work"))
    node = Node(Function(input_names=["x"], output_names=["y"], function=_double), name="double")
    node.inputs.x = 2
    wf.add_nodes([node])
    assert _run_workflow(wf, config, n_gpus=0) is False  # no crash
    assert float(restore_nipype_execution.get("execution", "poll_sleep_duration")) == expected
    assert config.nipype.plugin_args == plugin_args  # the configuration itself is left as it was
