"""Multi-worker training under ``torchrun``: the process group, each rank's shard of a batch, rank 0's decisions.

The trainer stays one program. ``torchrun`` (``torch.distributed.run``) starts one copy per worker and sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address; `Workers.from_env` joins the process group
(gloo on CPU, NCCL on CUDA) and returns None in a plain single process, which then trains exactly as before.

What a worker does differently (``training.run.loop.TrainLoop``):

- every rank draws the same shuffle and the same negatives for the whole global batch (one seeded generator, the
  same on every rank) and keeps its contiguous slice of the batch (`Workers.shard`);
- the model is wrapped in PyTorch's ``DistributedDataParallel``, which averages the gradients over the ranks; each
  rank's mean loss is scaled by ``world * B_r / B`` (`Workers.loss_scale`), so the averaged gradient is the
  gradient of the global batch's mean loss, as one process would compute it;
- only rank 0 validates, tests and writes the run directory; its early-stop state is broadcast (`Workers.share`)
  so every rank stops after the same epoch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["LossModule", "Workers"]

T = TypeVar("T")


@dataclass(frozen=True)
class Workers:
    """This process's place among the training workers: ``rank`` of ``world``."""

    rank: int
    world: int
    local_rank: int = 0

    @classmethod
    def from_env(cls, device: str = "auto") -> Workers | None:
        """Join the process group ``torchrun`` described in the environment; None outside torchrun or with one
        worker.

        Args:
            device: the config's ``train.device``: NCCL when it resolves to CUDA, else gloo.
        """
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world < 2:
            return None
        workers = cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
        if not dist.is_initialized():
            cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
            if cuda:
                torch.cuda.set_device(workers.local_rank)
            dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(minutes=30))
        return workers

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """CUDA workers use the GPU of their local rank; CPU workers the CPU."""
        return torch.device("cuda", self.local_rank) if device.type == "cuda" else device

    def shard(self, batch: int) -> tuple[torch.Tensor, float]:
        """This rank's contiguous slice of a global batch of ``batch`` rows (positions) and its loss scale.

        Slices differ by at most one row. A rank left without rows (a last batch smaller than the world) gets the
        batch's first row with scale 0: it still takes part in the gradient all-reduce, adding nothing.
        """
        part = torch.tensor_split(torch.arange(batch), self.world)[self.rank]
        if len(part) == 0:
            return torch.zeros(1, dtype=torch.long), 0.0
        return part, self.loss_scale(len(part), batch)

    def loss_scale(self, rows: int, batch: int) -> float:
        """``world * B_r / B``: DDP divides the summed gradients by ``world``, leaving sum_r (B_r / B) grad_r,
        the gradient of the global batch's mean loss."""
        return self.world * rows / batch

    def share(self, value: T) -> T:
        """Rank 0's ``value`` on every rank (any picklable object)."""
        box: list[Any] = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[no-any-return]

    def sum(self, value: float) -> float:
        """The sum of ``value`` over the ranks."""
        total = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(total)
        return float(total.item())

    def gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's ``tensor`` (same shape and dtype on each), in rank order, on every rank."""
        local = (
            tensor.cuda() if dist.get_backend() == "nccl" else tensor
        )  # NCCL gathers GPU tensors
        out = [torch.empty_like(local) for _ in range(self.world)]
        dist.all_gather(out, local)
        return [t.to(tensor.device) for t in out]

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``model``'s loss in ``DistributedDataParallel``, which first copies rank 0's parameters and buffers to
        every rank. Buffers are not re-broadcast at each step: the frozen language table never changes."""
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(
            LossModule(model), device_ids=ids, forward_sync_buffers=False
        )

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


class LossModule(nn.Module):
    """``forward`` = the recommender's ``loss``: DDP synchronises gradients of what ``forward`` computes."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.model.loss(*args, **kwargs)  # type: ignore[no-any-return,operator]
