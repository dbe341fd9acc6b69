"""One run over several processes (GPUs or machines), started by ``torchrun``.

``torchrun --nproc-per-node N -m compress run ...`` starts N copies of the command; each
reads its place from the environment torchrun sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``). They train one network with PyTorch's ``DistributedDataParallel``:
``--batch-size`` stays the global batch, every process draws and augments the same
global batch and trains on its own contiguous share of it, and DDP averages the
gradients, so the weights follow those of one process with that batch (exactly, up to
floating-point order, for networks without BatchNorm: each process normalises its own
share, as DDP without SyncBatchNorm does). Evaluation and precise BN run whole in every
process (the same weights, images and answers), training metrics are all-reduced, and
only rank 0 writes the run directory; the others write to a temporary one.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from compress.runs import LOCK


def rank() -> int:
    """This process's place among the run's processes (0 alone)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """How many processes share the run (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def start(device: torch.device) -> None:
    """Join the run's process group (gloo on CPU, NCCL on CUDA), once per process."""
    if world_size() == 1 or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def device_ids(device: torch.device) -> list[int] | None:
    """What DDP's ``device_ids`` wants: this process's GPU, nothing on the CPU."""
    return [torch.cuda.current_device()] if device.type == "cuda" else None


def share(batch: torch.Tensor) -> torch.Tensor:
    """This process's contiguous share of a global batch (all of it alone)."""
    return batch.chunk(world_size())[rank()] if world_size() > 1 else batch


def summed(*values: torch.Tensor) -> list[torch.Tensor]:
    """Each tensor summed over the processes (itself alone)."""
    if world_size() == 1:
        return list(values)
    stacked = torch.stack([v.double() for v in values])
    dist.all_reduce(stacked)
    return list(stacked.unbind())


def wrap(model: torch.nn.Module, device: torch.device) -> Any:
    """``model`` in DistributedDataParallel when the run has several processes."""
    if world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=device_ids(device))


def scratch_directory(name: str, copy_of: Path | None = None) -> Path:
    """Where a process other than rank 0 writes its copy of the run (``copy_of``'s files,
    to resume): a temporary folder, removed when the process ends."""
    root = Path(tempfile.mkdtemp(prefix=f"compress-rank{rank()}-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    if copy_of is not None:
        return Path(shutil.copytree(copy_of, root / name, ignore=shutil.ignore_patterns(LOCK)))
    (root / name).mkdir()
    return root / name
