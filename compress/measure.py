"""Exact cost of a model: params, MACs/FLOPs, memory, size and latency.

MACs come from ``torch.utils.flop_counter`` (FLOPs = 2 x MACs, the convention of the
GhostNet paper, whose "FLOPs" are multiply-adds). Each figure says whether it was
measured or estimated: ``MEASURED`` and ``ESTIMATED`` name them.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

MEASURED = (
    "params",
    "trainable_params",
    "nonzero_params",
    "macs",
    "flops",
    "serialized_bytes",
    "peak_memory_bytes",
    "latency_ms",
)
ESTIMATED = ("activation_bytes",)


@dataclass
class ModelProfile:
    """What a model costs at batch 1 on one input size and device."""

    params: int
    trainable_params: int
    nonzero_params: int
    macs: int
    flops: int
    param_bytes: int
    activation_bytes: int
    serialized_bytes: int
    peak_memory_bytes: int | None
    latency_ms: float | None
    threads: int
    device: str
    input_size: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def count_params(model: nn.Module) -> tuple[int, int, int]:
    """(total, trainable, non-zero) parameter counts; shared tensors count once."""
    params = list({id(p): p for p in model.parameters()}.values())
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    nonzero = sum(int(torch.count_nonzero(p.detach())) for p in params)
    return total, trainable, nonzero


def count_macs(model: nn.Module, inputs: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass, from PyTorch's own FLOP counter."""
    # The counter's module tracker hooks every tensor that requires grad, even under
    # no_grad, and fails on brevitas' sliced weights: freeze parameters while counting.
    trainable = [p for p in model.parameters() if p.requires_grad]
    for parameter in trainable:
        parameter.requires_grad_(False)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(inputs)
    finally:
        for parameter in trainable:
            parameter.requires_grad_(True)
    return counter.get_total_flops() // 2


def forward_with_hooks(
    model: nn.Module,
    inputs: torch.Tensor,
    modules: Iterable[nn.Module],
    hook: Callable[[nn.Module, Any, Any], None],
) -> None:
    """One no-grad forward pass with ``hook`` on the given modules, removed afterwards."""
    handles = [module.register_forward_hook(hook) for module in modules]
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()


def activation_bytes(model: nn.Module, inputs: torch.Tensor) -> int:
    """Bytes of every leaf module's output in one forward pass (an upper-bound estimate)."""
    total = 0

    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel() * output.element_size()

    leaves = [m for m in model.modules() if not list(m.children())]
    forward_with_hooks(model, inputs, leaves, hook)
    return total


def serialized_bytes(model: nn.Module) -> int:
    """Size of ``torch.save(model.state_dict())``: what a checkpoint costs on disk."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def latency_ms(model: nn.Module, inputs: torch.Tensor, repeats: int = 30, warmup: int = 5) -> float:
    """Median wall time of one batch-1 forward pass after warm-up, in milliseconds."""
    times = []
    with torch.no_grad():
        for step in range(warmup + repeats):
            _synchronize(inputs.device)
            start = time.perf_counter()
            model(inputs)
            _synchronize(inputs.device)
            if step >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def profile_model(
    model: nn.Module,
    input_size: int,
    device: str | torch.device = "cpu",
    latency_repeats: int = 30,
    in_channels: int = 3,
) -> ModelProfile:
    """Measure ``model`` at batch 1 on ``input_size`` x ``input_size`` inputs.

    ``latency_repeats=0`` skips timing. Peak memory is measured on CUDA only.
    """
    device = torch.device(device)
    model = model.to(device).eval()
    inputs = torch.randn(1, in_channels, input_size, input_size, device=device)
    total, trainable, nonzero = count_params(model)
    macs = count_macs(model, inputs)
    peak = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        with torch.no_grad():
            model(inputs)
        peak = torch.cuda.max_memory_allocated(device)
    return ModelProfile(
        params=total,
        trainable_params=trainable,
        nonzero_params=nonzero,
        macs=macs,
        flops=2 * macs,
        param_bytes=sum(p.numel() * p.element_size() for p in model.parameters()),
        activation_bytes=activation_bytes(model, inputs),
        serialized_bytes=serialized_bytes(model),
        peak_memory_bytes=peak,
        latency_ms=latency_ms(model, inputs, latency_repeats) if latency_repeats else None,
        threads=torch.get_num_threads(),
        device=str(device),
        input_size=input_size,
    )
