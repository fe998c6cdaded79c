"""Process-group set-up for multi-process training (torchrun, srun or none).

``torchrun`` exports RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT; under
``srun`` SLURM exports SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID instead and the
job script sets MASTER_ADDR/MASTER_PORT. Either way one process per device joins
a process group: NCCL when it drives a GPU, gloo on the CPU. A single process
without any of these variables runs undistributed. Gradients are averaged with
an explicit all-reduce after each backward pass, so the same training step code
serves one process and many, and every rank keeps identical weights.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta

LOGGER = logging.getLogger("demist.train")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main rank writes files, logs progress and evaluates."""
        return self.rank == 0


def rendezvous_from_environment(env: dict[str, str] | None = None) -> tuple[int, int, int]:
    """Return (rank, world_size, local_rank) from torchrun or SLURM variables.

    torchrun's variables win when both are present (torchrun inside a SLURM
    allocation). A SLURM job with a single task is treated as undistributed.
    """
    env = dict(os.environ if env is None else env)
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        return (
            int(env["SLURM_PROCID"]),
            int(env["SLURM_NTASKS"]),
            int(env.get("SLURM_LOCALID", 0)),
        )
    return 0, 1, 0


def init_distributed(device_type: str = "cpu") -> DistributedContext:
    """Join the process group when launched as one of several processes.

    Args:
        device_type: "cuda" selects NCCL and pins this process to its local GPU;
            anything else selects gloo.
    """
    import torch
    import torch.distributed as dist

    rank, world_size, local_rank = rendezvous_from_environment()
    if world_size == 1:
        return DistributedContext()
    if dist.is_initialized():
        return DistributedContext(rank, world_size, local_rank, dist.get_backend())
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    # Generous timeout: non-main ranks wait at a barrier while the main rank
    # preprocesses the cohort and evaluates each fold.
    dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=timedelta(hours=4))
    LOGGER.info("Joined %s process group: rank %d of %d", backend, rank, world_size)
    return DistributedContext(rank, world_size, local_rank, backend)


def shutdown_distributed(ctx: DistributedContext) -> None:
    """Leave the process group (no-op when undistributed)."""
    if ctx.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def barrier(ctx: DistributedContext) -> None:
    """Wait for every rank (no-op when undistributed)."""
    if ctx.enabled:
        import torch.distributed as dist

        dist.barrier()


def broadcast_parameters(ctx: DistributedContext, module) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    if not ctx.enabled:
        return
    import torch.distributed as dist

    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


def average_gradients(ctx: DistributedContext, parameters) -> None:
    """All-reduce and average the gradients of ``parameters`` across ranks.

    Parameters without a gradient on this step get a zero gradient first, so
    every rank takes part in the same collective calls.
    """
    if not ctx.enabled:
        return
    import torch
    import torch.distributed as dist

    params = list(parameters)
    if not params:
        return
    for param in params:
        if param.grad is None:
            param.grad = torch.zeros_like(param)
    # One flat buffer: a single collective instead of one per tensor.
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(ctx.world_size)
    offset = 0
    for param in params:
        n = param.grad.numel()
        param.grad.copy_(flat[offset : offset + n].view_as(param.grad))
        offset += n


def average_scalar(ctx: DistributedContext, value: float) -> float:
    """Mean of a scalar over ranks (for logging the loss every rank saw)."""
    if not ctx.enabled:
        return value
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return float(tensor.item()) / ctx.world_size
