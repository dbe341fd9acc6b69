"""GhostNet (Han et al., CVPR 2020, Table 7), layer for layer as the authors' code.

Module names match timm's ``ghostnet_*`` so the parameter count is identical and
timm's weights load with ``load_state_dict(strict=True)``.
"""

from __future__ import annotations

import torch
from torch import nn

from baselines.registry import register_model
from ghost.module import GhostModule, check_ghost_options

# Per block: depthwise kernel k, expansion width, output width, SE ratio, stride.
GHOSTNET_BLOCKS: list[list[tuple[int, int, int, float, int]]] = [
    [(3, 16, 16, 0, 1)],
    [(3, 48, 24, 0, 2)],
    [(3, 72, 24, 0, 1)],
    [(5, 72, 40, 0.25, 2)],
    [(5, 120, 40, 0.25, 1)],
    [(3, 240, 80, 0, 2)],
    [
        (3, 200, 80, 0, 1),
        (3, 184, 80, 0, 1),
        (3, 184, 80, 0, 1),
        (3, 480, 112, 0.25, 1),
        (3, 672, 112, 0.25, 1),
    ],
    [(5, 672, 160, 0.25, 2)],
    [
        (5, 960, 160, 0, 1),
        (5, 960, 160, 0.25, 1),
        (5, 960, 160, 0, 1),
        (5, 960, 160, 0.25, 1),
    ],
]


def make_divisible(value: float, divisor: int = 4, round_limit: float = 0.9) -> int:
    """Round a width to a multiple of ``divisor`` without losing more than 10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < round_limit * value:
        rounded += divisor
    return rounded


class SqueezeExcite(nn.Module):
    """SE with a hard-sigmoid gate, relu6(x + 3) / 6, and a width rounded to 4."""

    def __init__(self, channels: int, se_ratio: float = 0.25) -> None:
        super().__init__()
        reduced = make_divisible(channels * se_ratio, 4)
        self.conv_reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.act1 = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv2d(reduced, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.conv_expand(self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * self.gate(scale)


class ConvBnAct(nn.Module):
    """Plain conv + BN + ReLU, the last feature layer before pooling."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn1(self.conv(x)))


class GhostBottleneck(nn.Module):
    """Ghost module (expand) -> [depthwise stride 2] -> [SE] -> Ghost module (project).

    The shortcut is the identity when shapes match, else a depthwise ``k x k`` conv
    with the block's stride followed by a 1x1 projection, each with BN.
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        dw_kernel_size: int = 3,
        stride: int = 1,
        se_ratio: float = 0.0,
        s: int = 2,
        d: int = 3,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.ghost1 = GhostModule(in_channels, mid_channels, ratio=s, dw_size=d, relu=True)
        if stride > 1:
            self.conv_dw = nn.Conv2d(
                mid_channels,
                mid_channels,
                dw_kernel_size,
                stride,
                (dw_kernel_size - 1) // 2,
                groups=mid_channels,
                bias=False,
            )
            self.bn_dw = nn.BatchNorm2d(mid_channels)
        self.se = SqueezeExcite(mid_channels, se_ratio) if se_ratio > 0 else None
        self.ghost2 = GhostModule(mid_channels, out_channels, ratio=s, dw_size=d, relu=False)
        if in_channels == out_channels and stride == 1:
            self.shortcut = nn.Sequential()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(
                    in_channels,
                    in_channels,
                    dw_kernel_size,
                    stride,
                    (dw_kernel_size - 1) // 2,
                    groups=in_channels,
                    bias=False,
                ),
                nn.BatchNorm2d(in_channels),
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.ghost1(x)
        if self.stride > 1:
            out = self.bn_dw(self.conv_dw(out))
        if self.se is not None:
            out = self.se(out)
        return self.ghost2(out) + self.shortcut(x)


class GhostNet(nn.Module):
    """GhostNet of the paper's Table 7 at any width, ghost ratio ``s`` and cheap kernel ``d``.

    ``cifar=True`` adapts it to 32x32 inputs: the stem and the first stride-2 block
    use stride 1, so the net downsamples 8x instead of 32x and its last feature map is
    4x4 rather than 1x1. That block thereby loses its stride-2 depthwise conv (528
    params at width 1); widths, the other blocks and the head are unchanged.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        width: float = 1.0,
        dropout: float = 0.2,
        s: int = 2,
        d: int = 3,
        cifar: bool = False,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        check_ghost_options(s, d)
        if not width > 0:
            raise ValueError(f"width must be > 0, got {width!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.dropout = dropout
        stem_channels = make_divisible(16 * width, 4)
        self.conv_stem = nn.Conv2d(in_channels, stem_channels, 3, 1 if cifar else 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_channels)
        self.act1 = nn.ReLU(inplace=True)
        stages: list[nn.Module] = []
        channels = stem_channels
        first_downsample_done = False
        for stage in GHOSTNET_BLOCKS:
            blocks = []
            for kernel, expansion, out, se_ratio, stride in stage:
                if cifar and stride > 1 and not first_downsample_done:
                    stride, first_downsample_done = 1, True
                out_channels = make_divisible(out * width, 4)
                mid_channels = make_divisible(expansion * width, 4)
                blocks.append(
                    GhostBottleneck(
                        channels, mid_channels, out_channels, kernel, stride, se_ratio, s, d
                    )
                )
                channels = out_channels
            stages.append(nn.Sequential(*blocks))
        feature_channels = make_divisible(GHOSTNET_BLOCKS[-1][-1][1] * width, 4)
        stages.append(nn.Sequential(ConvBnAct(channels, feature_channels, 1)))
        self.blocks = nn.Sequential(*stages)
        self.num_features = 1280
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = nn.Conv2d(feature_channels, self.num_features, 1, bias=True)
        self.act2 = nn.ReLU(inplace=True)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(self.num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.act1(self.bn1(self.conv_stem(x))))
        x = self.flatten(self.act2(self.conv_head(self.global_pool(x))))
        x = nn.functional.dropout(x, self.dropout, self.training)
        return self.classifier(x)


@register_model(
    "ghostnet", input_size=224, num_classes=1000, reference="mobilenetv3_large", family="ghost"
)
def ghostnet(
    num_classes: int = 1000,
    width: float = 1.0,
    s: int = 2,
    d: int = 3,
    dropout: float = 0.2,
    cifar: bool = False,
) -> GhostNet:
    """GhostNet (Table 7); width 0.5 / 1.0 / 1.3 are the paper's ghostnet_050/100/130."""
    return GhostNet(num_classes, width, dropout, s, d, cifar)
