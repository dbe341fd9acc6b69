"""Exact cost of a model: params, MACs/FLOPs, memory, size and latency.

MACs come from ``torch.utils.flop_counter`` (FLOPs = 2 x MACs, the convention of the
GhostNet paper, whose "FLOPs" are multiply-adds). Each figure says whether it was
measured or estimated: ``MEASURED`` and ``ESTIMATED`` name them.
"""

from __future__ import annotations

import io
import os
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
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
    latency_quartiles: tuple[float, float] | None = None  # 25th and 75th percentiles, ms
    cpu_used_by_others: float | None = None  # share of the CPUs, just before timing

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def count_params(model: nn.Module, auxiliary: Iterable[nn.Parameter] = ()) -> tuple[int, int, int]:
    """(total, trainable, non-zero) parameter counts; shared tensors count once, and
    ``auxiliary`` ones (a quantizer's scales, say: not the network's) not at all."""
    skipped = {id(p) for p in auxiliary}
    params = [p for i, p in {id(p): p for p in model.parameters()}.items() if i not in skipped]
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
    """Bytes of the tensors that modules output in one forward pass, each tensor once.

    Every module counts, containers too (a Ghost module's concatenation, a residual sum);
    an in-place ReLU, an ``Identity``, a view or a container that hands on the tensor it
    was given adds nothing. Outputs are held until the pass ends, so no storage is reused
    and counted twice. An upper-bound estimate: nothing is freed along the way.
    """
    storages: dict[int, int] = {}
    held: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            held.append(output)
            storage = output.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()

    forward_with_hooks(model, inputs, list(model.modules()), hook)
    storages.pop(inputs.untyped_storage().data_ptr(), None)  # the input is not an activation
    return sum(storages.values())


def serialized_bytes(model: nn.Module) -> int:
    """Size of ``torch.save(model.state_dict())``: what a checkpoint costs on disk."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timing:
    """A model's forward-pass times: the median and the middle half of the repeats."""

    median_ms: float
    low_ms: float  # 25th percentile
    high_ms: float  # 75th percentile


def cpu_used_by_others(interval: float = 0.3) -> float | None:
    """The share of all CPUs that other processes used over ``interval`` seconds (Linux's
    /proc/stat, less this process's own time): above a few percent, latencies measured now
    are slower than the machine's and vary more. None where it cannot be read."""

    def busy_and_total() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields) - idle, sum(fields)

    try:
        tick = os.sysconf("SC_CLK_TCK")
        busy, total = busy_and_total()
        own = time.process_time()
        time.sleep(interval)
        busy_after, total_after = busy_and_total()
        own = (time.process_time() - own) * tick
    except (OSError, ValueError, IndexError):
        return None
    if total_after <= total:
        return None
    return max(0.0, (busy_after - busy - own) / (total_after - total))


def timings(
    models: Sequence[nn.Module], inputs: torch.Tensor, repeats: int = 30, warmup: int = 5
) -> list[Timing]:
    """Each model's forward-pass times, measured side by side: the models take turns in
    every repeat, so a change of machine load during the measurement reaches all of them
    alike; the median ignores the odd slow repeat, the quartiles show the spread."""
    times: list[list[float]] = [[] for _ in models]
    with torch.no_grad():
        for step in range(warmup + repeats):
            for index, model in enumerate(models):
                _synchronize(inputs.device)
                start = time.perf_counter()
                model(inputs)
                _synchronize(inputs.device)
                if step >= warmup:
                    times[index].append((time.perf_counter() - start) * 1e3)
    result = []
    for series in times:
        low, _, high = statistics.quantiles(series, n=4) if len(series) > 1 else series * 3
        result.append(Timing(statistics.median(series), low, high))
    return result


def latencies_ms(
    models: Sequence[nn.Module], inputs: torch.Tensor, repeats: int = 30, warmup: int = 5
) -> list[float]:
    """Median wall time of one forward pass of each model, in milliseconds, side by side."""
    return [timing.median_ms for timing in timings(models, inputs, repeats, warmup)]


def latency_ms(model: nn.Module, inputs: torch.Tensor, repeats: int = 30, warmup: int = 5) -> float:
    """Median wall time of one forward pass after warm-up, in milliseconds."""
    return latencies_ms([model], inputs, repeats, warmup)[0]


def profile_model(
    model: nn.Module,
    input_size: int,
    device: str | torch.device = "cpu",
    latency_repeats: int = 30,
    in_channels: int = 3,
    auxiliary: Iterable[nn.Parameter] = (),
) -> ModelProfile:
    """Measure ``model`` at batch 1 on ``input_size`` x ``input_size`` inputs.

    ``latency_repeats=0`` skips timing. Peak memory is measured on CUDA only.
    ``auxiliary`` parameters (not the network's, e.g. quantizer scales) are not counted.
    """
    device = torch.device(device)
    model = model.to(device).eval()
    inputs = torch.randn(1, in_channels, input_size, input_size, device=device)
    auxiliary = list(auxiliary)
    skipped = {id(p) for p in auxiliary}
    total, trainable, nonzero = count_params(model, auxiliary)
    macs = count_macs(model, inputs)
    timing, others = None, None
    if latency_repeats:
        others = cpu_used_by_others() if device.type == "cpu" else None
        timing = timings([model], inputs, latency_repeats)[0]
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
        param_bytes=sum(
            p.numel() * p.element_size() for p in model.parameters() if id(p) not in skipped
        ),
        activation_bytes=activation_bytes(model, inputs),
        serialized_bytes=serialized_bytes(model),
        peak_memory_bytes=peak,
        latency_ms=timing.median_ms if timing else None,
        threads=torch.get_num_threads(),
        device=str(device),
        input_size=input_size,
        latency_quartiles=(timing.low_ms, timing.high_ms) if timing else None,
        cpu_used_by_others=others,
    )
