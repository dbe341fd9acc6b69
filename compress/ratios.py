"""Eq. 4 and 5 of the paper beside what a real conv and its Ghost module cost, measured.

For a conv of ``c`` inputs, ``n`` outputs and a ``k x k`` kernel against its Ghost module
(ratio ``s``, cheap kernel ``d``), MACs and weights are counted by PyTorch's FLOP counter
and set next to ``ghost.theory.speedup_ratio``: per layer of a ghostified network
(``layer_ratios``) or for one layer of any size (``conv_vs_ghost``, on meta tensors).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from compress.measure import count_macs, forward_with_hooks
from ghost.ghostify import GhostifyReport
from ghost.module import GhostModule
from ghost.theory import speedup_ratio


@dataclass(frozen=True)
class LayerRatio:
    """Theory against measurement for one ghostified layer."""

    name: str
    c: int
    n: int
    k: int
    output_hw: tuple[int, int]
    theory: float
    mac_ratio: float
    param_ratio: float


def _conv_weights(module: nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Conv2d))


def layer_ratios(model: nn.Module, report: GhostifyReport, input_size: int) -> list[LayerRatio]:
    """Per ghostified layer: Eq. 4 next to the measured MAC and weight ratios.

    MACs of the conv and of its Ghost module are both counted by PyTorch's FLOP counter
    on meta tensors at the input shape the layer sees in ``model``; BN is left out of the
    weight ratio, as in the paper.
    """
    shapes: dict[str, torch.Size] = {}
    names = {module: name for name, module in model.named_modules()}
    changed = {layer.name for layer in report.changed}

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: object) -> None:
        shapes[names[module]] = inputs[0].shape

    layers = [module for module, name in names.items() if name in changed]
    example = torch.zeros(1, 3, input_size, input_size, device=_device(model))
    forward_with_hooks(model.eval(), example, layers, record)
    return [
        conv_vs_ghost(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            report.s,
            report.d,
            shapes[layer.name][2:],
            layer.stride,
            layer.relu,
            layer.name,
        )
        for layer in report.changed
    ]


def conv_vs_ghost(
    c: int,
    n: int,
    k: int,
    s: int,
    d: int,
    input_hw: tuple[int, int],
    stride: int = 1,
    relu: bool = True,
    name: str = "conv",
) -> LayerRatio:
    """Eq. 4 beside the MAC and weight ratios of a real ``k x k`` conv and its Ghost module,
    counted by PyTorch's FLOP counter on meta tensors (no memory, any size)."""
    with torch.device("meta"):  # built there: a layer of any width costs nothing
        conv = nn.Conv2d(c, n, k, stride, k // 2, bias=False)
        ghost = GhostModule(c, n, k, s, d, stride, relu)
        inputs = torch.empty(1, c, *input_hw)
    output = conv(inputs)
    return LayerRatio(
        name=name,
        c=c,
        n=n,
        k=k,
        output_hw=(output.shape[2], output.shape[3]),
        theory=speedup_ratio(c, k, s, d),
        mac_ratio=count_macs(conv, inputs) / count_macs(ghost, inputs),
        param_ratio=_conv_weights(conv) / _conv_weights(ghost),
    )


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
