"""The Ghost module (Han et al., CVPR 2020): a few intrinsic maps from a real
convolution, the rest ("ghosts") from a cheap depthwise operation on them.

Layer names follow the authors' code (``primary_conv``, ``cheap_operation``) so
their checkpoints, and timm's, load unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def check_ghost_options(s: int, d: int) -> None:
    """Reject ratios and cheap kernels the paper's construction cannot build."""
    if isinstance(s, bool) or not isinstance(s, int) or s < 2:
        raise ValueError(f"ghost ratio s must be an integer >= 2, got {s!r}")
    if isinstance(d, bool) or not isinstance(d, int) or d < 1 or d % 2 == 0:
        raise ValueError(f"cheap kernel d must be a positive odd integer, got {d!r}")


class GhostModule(nn.Module):
    """``out`` maps from ``ceil(out / s)`` intrinsic ones and ``s - 1`` cheap ghosts of each.

    The primary conv keeps ``kernel_size`` and ``stride``; the cheap operation is a
    ``d x d`` depthwise conv mapping each intrinsic map to ``s - 1`` ghosts. Both are
    followed by BatchNorm and, when ``relu``, ReLU. The concatenation is cut to ``out``
    channels so any ``out`` works, divisible by ``s`` or not. Output channel ``k m + i``
    is the k-th view of intrinsic map ``i`` (k = 0 the map itself).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        ratio: int = 2,
        dw_size: int = 3,
        stride: int = 1,
        relu: bool = True,
    ) -> None:
        super().__init__()
        check_ghost_options(ratio, dw_size)
        self.out_channels = out_channels
        self.ratio = ratio
        init_channels = math.ceil(out_channels / ratio)
        new_channels = init_channels * (ratio - 1)
        self.primary_conv = nn.Sequential(
            nn.Conv2d(
                in_channels, init_channels, kernel_size, stride, kernel_size // 2, bias=False
            ),
            nn.BatchNorm2d(init_channels),
            nn.ReLU(inplace=True) if relu else nn.Identity(),
        )
        self.cheap_operation = nn.Sequential(
            nn.Conv2d(
                init_channels,
                new_channels,
                dw_size,
                1,
                dw_size // 2,
                groups=init_channels,
                bias=False,
            ),
            nn.BatchNorm2d(new_channels),
            nn.ReLU(inplace=True) if relu else nn.Identity(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        intrinsic = self.primary_conv(x)
        ghosts = self.cheap_operation(intrinsic)
        if self.ratio > 2:
            # Order ghosts in s - 1 blocks of one ghost per intrinsic map, so the output is
            # s blocks aligned with the intrinsic maps (what structured pruning needs). For
            # s = 2, the authors' order, this is the identity.
            batch, _, height, width = ghosts.shape
            ghosts = ghosts.view(batch, intrinsic.shape[1], self.ratio - 1, height, width)
            ghosts = ghosts.transpose(1, 2).reshape(batch, -1, height, width)
        out = torch.cat([intrinsic, ghosts], dim=1)
        # Slice only when needed: a no-op slice hides the channel mapping from tracers
        # such as torch-pruning's dependency graph.
        return out if out.shape[1] == self.out_channels else out[:, : self.out_channels]
