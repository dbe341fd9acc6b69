"""The paper's ghostified CIFAR backbones (Table 4): Ghost-VGG-16 and Ghost-ResNet-56."""

from __future__ import annotations

from torch import nn

from baselines.cifar import CifarResNet, vgg16
from baselines.registry import register_model
from ghost.ghostify import ghostify


@register_model("ghost_vgg16", input_size=32, num_classes=10, reference="vgg16", family="ghost")
def ghost_vgg16(
    num_classes: int = 10, s: int = 2, d: int = 3, keep_first: bool = True
) -> nn.Module:
    """Ghost-VGG-16: every conv of CIFAR VGG-16 but the first made a Ghost module."""
    model = vgg16(num_classes)
    ghostify(model, s, d, keep_first)
    return model


def _register_ghost_resnet(depth: int) -> None:
    def factory(
        num_classes: int = 10, s: int = 2, d: int = 3, keep_first: bool = True
    ) -> nn.Module:
        model = CifarResNet(depth, num_classes)
        ghostify(model, s, d, keep_first)
        return model

    factory.__doc__ = (
        f"Ghost-ResNet-{depth}: every conv of CIFAR ResNet-{depth} but the first ghostified."
    )
    register_model(
        f"ghost_resnet{depth}",
        input_size=32,
        num_classes=10,
        reference=f"resnet{depth}",
        family="ghost",
    )(factory)


for _depth in (20, 32, 44, 56, 110):
    _register_ghost_resnet(_depth)
