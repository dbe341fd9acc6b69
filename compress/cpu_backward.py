"""Faster CPU gradients for the two convolutions of mobile networks that PyTorch's CPU
kernels do slowly, computed exactly by other means.

- **Depthwise weight gradients on maps smaller than the kernel** (one filter per channel;
  3x3 kernels on GhostNet's 2x2 and 1x1 maps at 32x32 inputs, 5x5 ones on 4x4 and 2x2).
  There oneDNN, which PyTorch calls on the CPU, leaves its depthwise kernel for a general
  GEMM one (``ONEDNN_VERBOSE=1`` shows ``x64:gemm:jit`` in place of ``jit_dw``): at
  batch 128 GhostNet's 24 such layers took 320 ms a step, its 17 others 11 ms. The same
  numbers come from one grouped convolution: grouping the input by channel, each group's
  N batch images are convolved with that channel's N output gradients as the kernel (the
  stride becomes the dilation), giving the k x k gradient, 10.6-11.4x faster there (5.3x
  at batch 32). On the other maps oneDNN's kernel was 7x faster than it, and keeps them.
- **Pointwise (1x1) convolutions on maps of at most 16 pixels**: squeeze-and-excitation
  and the head after global pooling, and the last stages at 32x32 inputs. Such a layer is a
  matrix product over (pixels, channels), and its backward as two matrix products was
  2.4-2.5x faster than PyTorch's convolution backward at 1x1, 1.5-1.7x at 2x2, 1.15-1.5x
  at 4x4; at 8x8 0.99-1.11x, at 16x16 0.84-0.91x, so larger maps are left to PyTorch.

Together an eager GhostNet training step at batch 128 is 1.65-2.03x faster,
MobileNetV3-Large's 1.90-1.93x (``bench/cpu_backward.py``, ``docs/benchmarks.md``). They
are applied where autograd asks for the gradients, by intercepting
``aten.convolution_backward`` while ``loss.backward()`` runs, so the model, its
``grad_fn`` graph (which torch-pruning traces) and its exports stay PyTorch's own.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

_convolution_backward = torch.ops.aten.convolution_backward.default
# Pixels of the largest map whose pointwise backward is taken as matrix products: at 4x4
# they were 1.15-1.5x faster than PyTorch's, at 8x8 0.99-1.11x, at 16x16 0.84-0.91x.
POINTWISE_MAX_PIXELS = 16


def is_depthwise(module: nn.Module) -> bool:
    """A convolution with one filter per channel. The CPU engine runs the backward of a
    network with one within :class:`CpuConvolutionBackward`."""
    return (
        isinstance(module, nn.Conv2d)
        and module.groups == module.in_channels == module.out_channels > 1
    )


def has_depthwise(model: nn.Module) -> bool:
    return any(is_depthwise(m) for m in model.modules())


def depthwise_weight_gradient(
    inputs: torch.Tensor,
    output_grad: torch.Tensor,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> torch.Tensor:
    """The weight gradient, shape (C, 1, kh, kw), of an undilated depthwise convolution
    of ``inputs`` (N, C, H, W) whose output received ``output_grad``."""
    n, c, h, w = inputs.shape
    by_channel = inputs.transpose(0, 1).reshape(1, c * n, h, w)
    kernels = output_grad.transpose(0, 1)  # (C, N, Ho, Wo): channel c's N output gradients
    full = F.conv2d(by_channel, kernels, padding=padding, dilation=stride, groups=c)
    # The correlation is at least k x k; its first k x k offsets are the kernel's taps.
    return full[0, :, : kernel_size[0], : kernel_size[1]].unsqueeze(1)


def pointwise_gradients(
    inputs: torch.Tensor,
    output_grad: torch.Tensor,
    weight: torch.Tensor,
    output_mask: list[bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(input, weight, bias) gradients of a 1x1 convolution without stride, padding or
    groups, as matrix products over rows of pixels (views of channels-last tensors); only
    those ``output_mask`` asks for."""
    n, c, h, w = inputs.shape
    rows = output_grad.permute(0, 2, 3, 1).reshape(n * h * w, -1)  # (pixels, out)
    matrix = weight.reshape(weight.shape[0], c)  # (out, in)
    grad_input = grad_weight = grad_bias = None
    if output_mask[0]:
        grad_input = (rows @ matrix).reshape(n, h, w, c).permute(0, 3, 1, 2)
        if inputs.is_contiguous():
            grad_input = grad_input.contiguous()
    if output_mask[1]:
        pixels = inputs.permute(0, 2, 3, 1).reshape(n * h * w, c)
        grad_weight = (rows.t() @ pixels).reshape(weight.shape)
    if output_mask[2]:
        grad_bias = rows.sum(0)
    return grad_input, grad_weight, grad_bias


class CpuConvolutionBackward(TorchDispatchMode):
    """Within this context, CPU depthwise convolutions on maps smaller than their kernel get
    their weight gradient from :func:`depthwise_weight_gradient` and small pointwise ones
    all their gradients from :func:`pointwise_gradients`; every other operation runs as it
    would."""

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None):
        if func is _convolution_backward and not kwargs:
            kind = _kind(*args)
            if kind == "pointwise":
                grad, inputs, weight = args[:3]
                return pointwise_gradients(inputs, grad, weight, args[-1])
            if kind == "depthwise":
                *arguments, (want_input, _, want_bias) = args
                grad_input, _, grad_bias = func(*arguments, [want_input, False, want_bias])
                grad, inputs, weight, _, stride, padding = arguments[:6]
                grad_weight = depthwise_weight_gradient(
                    inputs, grad, tuple(weight.shape[2:]), tuple(stride), tuple(padding)
                )
                return grad_input, grad_weight, grad_bias
        return func(*args, **(kwargs or {}))


def _kind(
    grad: torch.Tensor,
    inputs: torch.Tensor,
    weight: torch.Tensor,
    bias_sizes: Any,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    transposed: bool,
    output_padding: list[int],
    groups: int,
    output_mask: list[bool],
) -> str | None:
    """Which formulation of this module computes this convolution backward: "depthwise",
    "pointwise", or None (PyTorch's own)."""
    if inputs.device.type != "cpu" or inputs.dim() != 4 or transposed:
        return None
    if any(d != 1 for d in dilation):  # neither formulation takes dilation
        return None
    if (
        groups == 1
        and weight.shape[2:] == (1, 1)
        and all(s == 1 for s in stride)
        and all(p == 0 for p in padding)
        and inputs.shape[2] * inputs.shape[3] <= POINTWISE_MAX_PIXELS
    ):
        return "pointwise"
    if (
        output_mask[1]
        and groups == inputs.shape[1] == weight.shape[0] > 1
        and weight.shape[1] == 1
        and (inputs.shape[2] < weight.shape[2] or inputs.shape[3] < weight.shape[3])
    ):
        return "depthwise"
    return None
