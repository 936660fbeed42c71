"""Data-parallel fine-tuning with PyTorch's DistributedDataParallel (``torchrun --nproc_per_node
N``).

What each process does, and why the run equals a one-process run with the same global batch:

- Every process builds the same model (same seed; DDP also broadcasts rank 0's weights), shuffles
  with the same generator and cuts each *global* batch of ``optim.batch_size`` structures into
  contiguous, balanced shares (:func:`share_of`); it featurizes and collates only its share.
- The objective is written as this process's share of the global one: the data term is
  ``Σ_share loss / B_global``; each BaLoRA layer's KL (a mean over that layer's rows) is weighted by
  ``rows_share / rows_global`` (row counts summed over processes by an all-reduce). DDP *averages*
  gradients, so each process multiplies its share by the world size: the averaged gradient is then
  the gradient of the one-process objective, term for term.
- BaLoRA noise (every scope) is keyed by (seed, step, structure digest, layer, element) through the
  counter-based generator (``mofbalora.adapters.noise``), so each structure draws the same numbers
  in whichever process holds it: N processes draw what one process holding the whole batch draws.
  (MC-dropout masks come from a per-step generator: their draws, not their distribution, depend on
  the process count.)
- Devices: ``run.device=cpu`` runs every process on the CPU (gloo); ``cuda`` puts process
  ``LOCAL_RANK`` on GPU ``LOCAL_RANK`` (nccl). Noise is computed on the CPU and moved, so a GPU run
  draws the same numbers as a CPU run.
- Validation is sharded and its error sums all-reduced, so all processes take the same
  early-stopping decision. Only rank 0 writes checkpoints, ``metrics.csv`` and the final evaluation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from mofbalora.backbones.base import resolve_device


@dataclass(frozen=True)
class DistContext:
    """This process's place in a data-parallel run (``world_size == 1``: a plain run)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    #: where this process computes (its collectives run there: CPU tensors for gloo, its GPU for
    #: nccl)
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum of ``tensor`` over processes (returned; the input is not modified)."""
        if not self.enabled:
            return tensor
        out = tensor.detach().to(self.device, copy=True)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out.to(tensor.device)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


SINGLE = DistContext()


def init_from_env(device: str = "cpu", backend: str | None = None) -> DistContext:
    """Join the process group that ``torchrun`` describes in the environment (``WORLD_SIZE`` > 1).

    ``device`` (``run.device``): ``cpu`` → every process on the CPU, backend ``gloo``; ``cuda`` /
    ``auto`` with GPUs → process ``LOCAL_RANK`` on GPU ``LOCAL_RANK``, backend ``nccl``. ``backend``
    (or ``MOFBALORA_DIST_BACKEND``) overrides the choice. Without ``torchrun`` (no ``WORLD_SIZE``)
    this is a plain one-process run.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    for var in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise RuntimeError(
                f"WORLD_SIZE={world} but {var} is not set: start data-parallel runs with torchrun, "
                "e.g. torchrun --nproc_per_node 2 -m mofbalora.cli finetune ..."
            )
    local_rank = int(os.environ["LOCAL_RANK"])
    where = resolve_device(device)
    if where.type == "cuda":
        where = torch.device("cuda", local_rank)
        torch.cuda.set_device(where)
    backend = (
        backend
        or os.environ.get("MOFBALORA_DIST_BACKEND")
        or ("nccl" if where.type == "cuda" else "gloo")
    )
    if backend not in ("gloo", "nccl"):
        raise ValueError(
            f"unknown torch.distributed backend {backend!r}; choose from ['gloo', 'nccl']"
        )
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistContext(
        rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=where
    )


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def share_of(n: int, ctx: DistContext) -> tuple[int, int]:
    """``[start, stop)`` of this process's contiguous, balanced share of ``n`` items (sizes
    differ by ≤ 1)."""
    base, extra = divmod(n, ctx.world_size)
    start = ctx.rank * base + min(ctx.rank, extra)
    return start, start + base + (1 if ctx.rank < extra else 0)
