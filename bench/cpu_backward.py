"""The convolution gradients of a GhostNet step: PyTorch's kernels against other
formulations, each checked against PyTorch's gradients first, then whole training steps
with PyTorch's backward and with the engine's CPU backward (``compress.cpu_backward``).

On an H200 PyTorch's depthwise weight-gradient kernel was the largest single cost of a
32x32 GhostNet step (24.5% of kernel time, ``docs/benchmarks.md``). For every depthwise
convolution of GhostNet at the given input, with its real input and a random output
gradient, this times the weight gradient computed by

- ``pytorch``: autograd's own (the reference, and the baseline of each ratio);
- ``channels_last``: the same call on channels-last tensors (another kernel family);
- ``grouped_by_sample``: one grouped convolution over (batch x channels) groups, the
  output gradient as the kernel (stride becomes dilation), summed over the batch;
- ``grouped_by_channel``: one grouped convolution over channel groups of N images each
  (what the engine uses on the CPU);
- ``unfold``: the input's patches (``F.unfold``) contracted with the output gradient.

On the CPU it then times the depthwise weight gradients again on channels-last tensors
(as the engine runs them), PyTorch's against the grouped convolution, split by whether the
map is smaller than the kernel (where oneDNN leaves its depthwise kernel for a GEMM one),
which is how the engine picks the layers it takes; the backward of GhostNet's pointwise
(1x1) convolutions by the size of their maps, PyTorch's against two matrix products over
(pixels, channels), which is how the engine's threshold (``POINTWISE_MAX_PIXELS``) was
chosen; and whole eager
training steps (forward, backward, Adam) of GhostNet and MobileNetV3-Large on
channels-last tensors, as the engine runs them, with PyTorch's backward and inside
``CpuConvolutionBackward``.

    python bench/cpu_backward.py --device cuda --batch 128 --size 32
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import nn

from compress.cpu_backward import (
    CpuConvolutionBackward,
    depthwise_weight_gradient,
    is_depthwise,
    pointwise_gradients,
)
from compress.registry import create_model

Layer = tuple[nn.Conv2d, torch.Tensor]  # a convolution and its input
Gradient = Callable[[nn.Conv2d, torch.Tensor, torch.Tensor], torch.Tensor]


def is_pointwise(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.Conv2d)
        and module.kernel_size == module.stride == (1, 1)
        and module.padding == (0, 0)
        and module.groups == 1
    )


def ghostnet_layers(
    batch: int,
    size: int,
    device: torch.device,
    kind: Callable[[nn.Module], bool],
    memory_format: torch.memory_format = torch.contiguous_format,
) -> list[Layer]:
    """GhostNet's convolutions of one kind, each with its real input."""
    model = create_model("ghostnet", num_classes=10).to(device, memory_format=memory_format)
    layers: list[Layer] = []

    def keep(module: nn.Module, inputs: tuple[torch.Tensor, ...], _: torch.Tensor) -> None:
        layers.append((module, inputs[0].detach()))

    hooks = [m.register_forward_hook(keep) for m in model.modules() if kind(m)]
    with torch.no_grad():
        x = torch.randn(batch, 3, size, size, device=device)
        model(x.contiguous(memory_format=memory_format))
    for hook in hooks:
        hook.remove()
    return layers


def pytorch(conv: nn.Conv2d, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    return torch.nn.grad.conv2d_weight(
        x, conv.weight.shape, grad, conv.stride, conv.padding, conv.dilation, conv.groups
    )


def channels_last(conv: nn.Conv2d, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    cl = torch.channels_last
    return pytorch(conv, x.contiguous(memory_format=cl), grad.contiguous(memory_format=cl))


def grouped_by_sample(conv: nn.Conv2d, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    k = conv.kernel_size
    out = F.conv2d(
        x.reshape(1, n * c, h, w),
        grad.reshape(n * c, 1, *grad.shape[2:]),
        padding=conv.padding,
        dilation=conv.stride,
        groups=n * c,
    )
    return out[..., : k[0], : k[1]].reshape(n, c, *k).sum(0).unsqueeze(1)


def grouped_by_channel(conv: nn.Conv2d, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    return depthwise_weight_gradient(x, grad, conv.kernel_size, conv.stride, conv.padding)


def unfold(conv: nn.Conv2d, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    n, c = x.shape[:2]
    k = conv.kernel_size
    patches = F.unfold(x, k, padding=conv.padding, stride=conv.stride)
    patches = patches.reshape(n, c, k[0] * k[1], -1)
    weight = torch.einsum("nckl,ncl->ck", patches, grad.flatten(2))
    return weight.reshape(c, 1, *k)


FORMULATIONS: dict[str, Gradient] = {
    "pytorch": pytorch,
    "channels_last": channels_last,
    "grouped_by_sample": grouped_by_sample,
    "grouped_by_channel": grouped_by_channel,
    "unfold": unfold,
}


def seconds(fn: Gradient, cases: list[tuple[nn.Conv2d, torch.Tensor, torch.Tensor]], repeats: int):
    def once() -> None:
        for case in cases:
            fn(*case)

    once()  # warm-up: kernel selection, allocations
    if cases[0][1].is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        once()
    if cases[0][1].is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def max_relative_error(
    fn: Callable[..., object], reference: Callable[..., object], cases: list[tuple]
) -> float:
    """The largest gap between ``fn``'s and ``reference``'s results over ``cases`` (a tensor
    or a tuple of them, ``None`` for a gradient not asked for), relative to the reference's
    largest magnitude."""
    error = 0.0
    for case in cases:
        got, want = fn(*case), reference(*case)
        pairs = zip(got, want, strict=True) if isinstance(want, tuple) else [(got, want)]
        for value, expected in pairs:
            if expected is not None:
                scale = expected.abs().max().clamp_min(1e-12)
                error = max(error, ((value - expected).abs().max() / scale).item())
    return error


def depthwise_by_map(batch: int, size: int, repeats: int) -> list[tuple[str, int, float, float]]:
    """GhostNet's depthwise weight gradients on channels-last CPU tensors, on maps smaller
    than the kernel and on the others: (maps, layers, PyTorch's s, grouped s, error)."""
    layers = ghostnet_layers(batch, size, torch.device("cpu"), is_depthwise, torch.channels_last)
    groups: dict[str, list[tuple[nn.Conv2d, torch.Tensor, torch.Tensor]]] = {
        "smaller than the kernel": [],
        "at least the kernel": [],
    }
    for conv, x in layers:
        smaller = x.shape[2] < conv.kernel_size[0] or x.shape[3] < conv.kernel_size[1]
        group = "smaller than the kernel" if smaller else "at least the kernel"
        groups[group].append((conv, x, torch.randn_like(conv(x))))
    return [
        (
            name,
            len(cases),
            seconds(pytorch, cases, repeats),
            seconds(grouped_by_channel, cases, repeats),
            max_relative_error(grouped_by_channel, pytorch, cases),
        )
        for name, cases in groups.items()
        if cases
    ]


def pointwise_by_map_size(
    batch: int, size: int, repeats: int
) -> list[tuple[int, int, float, float, float]]:
    """For each map size of GhostNet's pointwise convolutions (channels-last, on the CPU):
    (pixels, layers, PyTorch's backward s, matrix products s, max relative error)."""
    by_pixels: dict[int, list[tuple[nn.Conv2d, torch.Tensor, torch.Tensor]]] = {}
    layers = ghostnet_layers(batch, size, torch.device("cpu"), is_pointwise, torch.channels_last)
    for conv, x in layers:
        grad = torch.randn_like(conv(x))
        by_pixels.setdefault(x.shape[2] * x.shape[3], []).append((conv, x, grad))
    mask = [True, True, False]

    def pytorch_backward(conv: nn.Conv2d, x: torch.Tensor, grad: torch.Tensor) -> tuple:
        return torch.ops.aten.convolution_backward(
            grad, x, conv.weight, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, mask
        )

    def matrix_products(conv: nn.Conv2d, x: torch.Tensor, grad: torch.Tensor) -> tuple:
        return pointwise_gradients(x, grad, conv.weight, mask)

    rows = []
    for pixels, cases in sorted(by_pixels.items()):
        error = max_relative_error(matrix_products, pytorch_backward, cases)
        base = seconds(pytorch_backward, cases, repeats)
        fast = seconds(matrix_products, cases, repeats)
        rows.append((pixels, len(cases), base, fast, error))
    return rows


def by_map_table(
    title: str, key: str, formulation: str, rows: list[tuple[object, int, float, float, float]]
) -> Table:
    """PyTorch's gradients against ``formulation``'s, a row per group of layers: (group,
    layers, PyTorch's s, the formulation's s, max relative error); each ratio printed."""
    table = Table(title=title)
    for column in (key, "layers", "pytorch", formulation, "ratio", "error"):
        table.add_column(column)
    for group, count, base, fast, error in rows:
        table.add_row(
            str(group),
            str(count),
            f"{base * 1e3:.2f} ms",
            f"{fast * 1e3:.2f} ms",
            f"{base / fast:.2f}x",
            f"{error:.1e}",
        )
        print(f"{formulation}, {key} {group}: ratio {base / fast:.3f}", flush=True)
    return table


def step_seconds(model_name: str, batch: int, size: int, repeats: int) -> tuple[float, float]:
    """Median seconds of an eager CPU training step, channels-last as the engine runs it,
    with PyTorch's backward and with the engine's, the two steps taken in turn so that
    both see the same load of the machine."""
    torch.manual_seed(0)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def trainer(backward: Callable[[], contextlib.AbstractContextManager]) -> Callable[[], float]:
        torch.manual_seed(0)
        model = create_model(model_name, num_classes=10).to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(model.parameters())

        def step() -> float:
            start = time.perf_counter()
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            with backward():
                loss.backward()
            optimizer.step()
            return time.perf_counter() - start

        step()  # warm-up
        return step

    pytorch_step = trainer(contextlib.nullcontext)
    engine_step = trainer(CpuConvolutionBackward)
    times = [(pytorch_step(), engine_step()) for _ in range(repeats)]
    return statistics.median(t for t, _ in times), statistics.median(t for _, t in times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    cases = []
    for conv, x in ghostnet_layers(args.batch, args.size, device, is_depthwise):
        out = conv(x)
        cases.append((conv, x, torch.randn_like(out)))
    table = Table(
        title=f"Depthwise weight gradients of GhostNet, batch {args.batch}, {args.size}px, "
        f"{len(cases)} layers, {device}"
    )
    for column in ("formulation", "max rel. error", "ms per step", "vs pytorch"):
        table.add_column(column)
    base = None
    for name, fn in FORMULATIONS.items():
        error = max_relative_error(fn, pytorch, cases)
        elapsed = seconds(fn, cases, args.repeats)
        base = base or elapsed
        table.add_row(name, f"{error:.1e}", f"{elapsed * 1e3:.2f}", f"{base / elapsed:.2f}x")
        print(f"{name}: error {error:.2e} ratio {base / elapsed:.3f}", flush=True)
    console = Console()
    console.print(table)
    if device.type != "cpu":
        return  # the engine's backward is for the CPU only
    title = f"batch {args.batch}, {args.size}px, channels-last, cpu"
    with torch.no_grad():
        depthwise = depthwise_by_map(args.batch, args.size, args.repeats)
        pointwise = pointwise_by_map_size(args.batch, args.size, args.repeats)
    console.print(
        by_map_table(
            f"Depthwise weight gradients of GhostNet by map, {title}",
            "map",
            "grouped by channel",
            depthwise,
        )
    )
    console.print(
        by_map_table(
            "Pointwise convolution backward (input and weight gradients) of GhostNet by map "
            f"size, {title}",
            "map pixels",
            "matrix products",
            pointwise,
        )
    )
    steps = Table(title=f"Eager CPU training steps, batch {args.batch}, {args.size}px")
    for column in ("model", "pytorch", "engine's CPU backward", "ratio"):
        steps.add_column(column)
    for model_name in ("ghostnet", "mobilenetv3_large"):
        base, fast = step_seconds(model_name, args.batch, args.size, args.repeats)
        steps.add_row(
            model_name, f"{base * 1e3:.0f} ms", f"{fast * 1e3:.0f} ms", f"{base / fast:.2f}x"
        )
        print(f"step {model_name}: ratio {base / fast:.3f}", flush=True)
    console.print(steps)


if __name__ == "__main__":
    main()
