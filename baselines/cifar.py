"""The CIFAR backbones of the Ghost paper's Table 4: VGG-16 and ResNet-20 ... 110."""

from __future__ import annotations

import torch
from torch import nn

from baselines.registry import register_model

VGG16_LAYERS: list[int | str] = [
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
]


class VGG(nn.Module):
    """VGG-16 for CIFAR as in Li et al., "Pruning Filters for Efficient ConvNets" (ICLR 2017).

    13 conv-BN-ReLU layers, five max-pools, then FC 512 -> 512 (BN, ReLU) -> classes.
    """

    def __init__(self, layers: list[int | str], num_classes: int = 10) -> None:
        super().__init__()
        features: list[nn.Module] = []
        channels = 3
        for layer in layers:
            if layer == "M":
                features.append(nn.MaxPool2d(2))
            else:
                features += [
                    nn.Conv2d(channels, int(layer), 3, padding=1, bias=False),
                    nn.BatchNorm2d(int(layer)),
                    nn.ReLU(inplace=True),
                ]
                channels = int(layer)
        self.features = nn.Sequential(*features)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Sequential(
            nn.Linear(channels, 512),
            nn.BatchNorm1d(512),
            nn.ReLU(inplace=True),
            nn.Linear(512, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(x)))


class ShortcutA(nn.Module):
    """He et al.'s option A: subsample by 2 and zero-pad the new channels (no parameters)."""

    def __init__(self, extra_channels: int) -> None:
        super().__init__()
        self.extra_channels = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.extra_channels // 2
        return nn.functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, self.extra_channels - pad))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity or option-A shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        downsample = stride != 1 or in_channels != out_channels
        self.shortcut = ShortcutA(out_channels - in_channels) if downsample else nn.Identity()
        self.act2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.act2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for CIFAR (He et al. 2016, section 4.2): widths 16/32/64, n blocks each."""

    def __init__(self, depth: int, num_classes: int = 10) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        blocks_per_stage = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.act1 = nn.ReLU(inplace=True)
        stages, channels = [], 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = [BasicBlock(channels, width, stride)]
            blocks += [BasicBlock(width, width) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            channels = width
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(channels, num_classes)

    def pruning_protected(self) -> list[nn.Module]:
        """Layers writing the residual stream: option-A shortcuts pad channels with zeros,
        which channel pruners cannot trace, so only each block's inner width is pruned
        (as Li et al. did for ResNet-56)."""
        blocks = [block for stage in (self.layer1, self.layer2, self.layer3) for block in stage]
        return [self.conv1, *(block.conv2 for block in blocks)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.pool(x)))


@register_model("vgg16", input_size=32, num_classes=10)
def vgg16(num_classes: int = 10) -> VGG:
    """VGG-16 for CIFAR (Li et al. 2017): 15M params, 313M MACs."""
    return VGG(VGG16_LAYERS, num_classes)


def _register_resnet(depth: int) -> None:
    def factory(num_classes: int = 10) -> CifarResNet:
        return CifarResNet(depth, num_classes)

    factory.__doc__ = f"ResNet-{depth} for CIFAR (He et al. 2016, option-A shortcuts)."
    register_model(f"resnet{depth}", input_size=32, num_classes=10)(factory)


for _depth in (20, 32, 44, 56, 110):
    _register_resnet(_depth)
