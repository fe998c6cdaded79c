"""Run every training stage of the small preset under torchrun (used by test_ddp.py).

Each rank trains on its own patches; gradients are averaged over the gloo
group, so at the end every rank must hold bit-identical weights. The engine
writes one weights digest per rank and stage into OUT/<stage>/.
"""

import sys
from pathlib import Path

import torch

from demist_bids.models.config import preset
from demist_bids.models.demist import build_model
from demist_bids.training import stages as st
from demist_bids.training.checkpoints import TerminationFlag
from demist_bids.training.distributed import init_distributed, shutdown_distributed
from demist_bids.training.patches import PatchSampler
from demist_bids.training.recipes import recipe
from tests.training.test_stages import _blob_volume


def main(out: Path) -> None:
    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    torch.manual_seed(100 + ctx.rank)  # different initial weights per rank: the engine must broadcast
    rec = recipe("small")
    rec.patch_size, rec.batch_size, rec.adversarial_start = [16, 16, 16], 1, 0.0
    sampler = PatchSampler([_blob_volume("a", 0), _blob_volume("b", 1)], rec.patch_size, 0.2,
                           seed=0, rank=ctx.rank)
    model = build_model(preset("small", ablation="full", psr_scale=0.2))
    for name, fn in (("ae", st.train_autoencoders), ("align", st.align_condition_encoder),
                     ("backbone", st.train_backbone), ("diffusion", st.train_streams)):
        fn(model, st.StageRun(sampler, rec, out / name, 2, ctx, TerminationFlag(), False, 0,
                              torch.device("cpu")))
    shutdown_distributed(ctx)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
