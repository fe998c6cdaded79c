"""The stage engine: an interrupted-and-resumed stage ends where an uninterrupted one does."""

import os
import signal

import pytest
import torch

from demist_bids.training.checkpoints import TerminationFlag, TrainingInterrupted
from demist_bids.training.distributed import DistributedContext
from demist_bids.training.engine import Stage, load_finished, run_stage, step_generator


def _toy_stage(directory, total=12):
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    stage = Stage("toy", directory, total, 4, modules={"net": net}, optimizers={"opt": opt})

    def step(i):
        gen = step_generator(7, 0, "toy", i)
        x = torch.randn(8, 3, generator=gen)
        loss = ((net(x) - x.sum(1, keepdim=True)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": float(loss.detach())}

    return stage, net, step


def test_sigterm_checkpoint_and_resume_match_uninterrupted(tmp_path):
    ctx = DistributedContext()
    reference, ref_net, ref_step = _toy_stage(tmp_path / "ref")
    run_stage(reference, ref_step, ctx=ctx, flag=TerminationFlag(), resume=False)

    stage, net, step = _toy_stage(tmp_path / "run")
    flag = TerminationFlag().install()
    try:
        def step_then_signal(i):
            out = step(i)
            if i == 5:  # mid-epoch: the checkpoint is written at step 6, not at the epoch end
                os.kill(os.getpid(), signal.SIGTERM)
            return out

        with pytest.raises(TrainingInterrupted) as info:
            run_stage(stage, step_then_signal, ctx=ctx, flag=flag, resume=False)
        assert info.value.exit_code == 75
    finally:
        flag.uninstall()
    assert not stage.is_done()
    resumed, net2, step2 = _toy_stage(tmp_path / "run")
    calls = []
    run_stage(resumed, lambda i: calls.append(i) or step2(i), ctx=ctx, flag=TerminationFlag(), resume=True)
    assert calls[0] == 6 and calls[-1] == 11
    assert torch.equal(net2.weight, ref_net.weight) and torch.equal(net2.bias, ref_net.bias)
    log_steps = [int(r.split(",")[0]) for r in (tmp_path / "run" / "log.csv").read_text().splitlines()[1:]]
    assert log_steps == list(range(1, 13))

    # A finished stage is reloaded, not retrained, on --resume; later stages can read it.
    again, net3, _ = _toy_stage(tmp_path / "run")
    run_stage(again, lambda i: pytest.fail("retrained"), ctx=ctx, flag=TerminationFlag(), resume=True)
    assert torch.equal(net3.weight, ref_net.weight)
    reader, net4, _ = _toy_stage(tmp_path / "run")
    load_finished(reader)
    assert torch.equal(net4.weight, ref_net.weight)


def test_step_generators_differ_by_rank_and_step():
    draw = lambda *a: torch.rand(4, generator=step_generator(*a))  # noqa: E731
    assert torch.equal(draw(1, 0, "ae", 3), draw(1, 0, "ae", 3))
    assert not torch.equal(draw(1, 0, "ae", 3), draw(1, 1, "ae", 3))
    assert not torch.equal(draw(1, 0, "ae", 3), draw(1, 0, "ae", 4))
    assert not torch.equal(draw(1, 0, "ae", 3), draw(1, 0, "align", 3))
    # the Table-1 methods' stages share their draws (common random numbers), as the docstring says
    assert torch.equal(draw(1, 0, "diffusion-demist", 3), draw(1, 0, "diffusion-controlnet", 3))
