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
    followed by BatchNorm and, when ``relu``, ReLU. Like the authors' code, the module
    keeps the intrinsic maps and the first ``out - m`` ghosts in the authors' order
    (map 0's ghosts, then map 1's, ...), so any ``out`` works, divisible by ``s`` or not.
    It lays them out in blocks instead: block 0 is the ``m`` intrinsic maps, block ``k``
    the k-th ghost of each map that keeps one (a prefix of the maps, ``ghosts_kept[k-1]``
    long). When ``s`` divides ``out`` every block is full and output channel ``k m + i``
    is the k-th view of intrinsic map ``i``, which is what structured pruning needs.
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

    @property
    def ghosts_kept(self) -> list[int]:
        """How many maps keep their k-th ghost, for k = 1 .. s-1: the authors' cut.

        The authors keep the first ``out - m`` ghosts of the order ``i (s-1) + k - 1``
        (map ``i``, view ``k``), so the k-th ghost of map ``i`` survives exactly when
        ``i (s-1) + k - 1 < out - m``: a prefix of the maps in every block.
        """
        maps = self.primary_conv[0].out_channels
        room = self.out_channels - maps
        s = self.ratio
        return [min(maps, max(0, -(-(room - k + 1) // (s - 1)))) for k in range(1, s)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        intrinsic = self.primary_conv(x)
        ghosts = self.cheap_operation(intrinsic)
        maps = intrinsic.shape[1]
        if self.out_channels == maps * self.ratio:
            if self.ratio > 2:
                # s - 1 blocks of one ghost per intrinsic map: the output is s blocks
                # aligned with the intrinsic maps. For s = 2 this is the identity.
                batch, _, height, width = ghosts.shape
                ghosts = ghosts.view(batch, maps, self.ratio - 1, height, width)
                ghosts = ghosts.transpose(1, 2).reshape(batch, -1, height, width)
            # No slicing here: a no-op slice hides the channel mapping from tracers such
            # as torch-pruning's dependency graph.
            return torch.cat([intrinsic, ghosts], dim=1)
        views = ghosts.unflatten(1, (maps, self.ratio - 1))
        blocks = [views[:, :kept, k] for k, kept in enumerate(self.ghosts_kept) if kept]
        return torch.cat([intrinsic, *blocks], dim=1)
