"""torchvision's mobile nets, registered under the names the paper's tables use.

torchvision is imported when one of them is built, not when they are registered: its
import loads ``torch._dynamo`` (about 2 s), which commands that train nothing (``--help``,
``list``, a study's parent process) would pay at start-up.
"""

from __future__ import annotations

from torch import nn

from baselines.registry import register_model


def _check_width(width: float) -> None:
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width!r}")


@register_model("mobilenetv3_large", input_size=224, num_classes=1000)
def mobilenetv3_large(num_classes: int = 1000, width: float = 1.0) -> nn.Module:
    """MobileNetV3-Large (torchvision), the paper's main competitor."""
    _check_width(width)
    from torchvision import models

    return models.mobilenet_v3_large(num_classes=num_classes, width_mult=width)


@register_model("mobilenetv3_small", input_size=224, num_classes=1000)
def mobilenetv3_small(num_classes: int = 1000, width: float = 1.0) -> nn.Module:
    """MobileNetV3-Small (torchvision)."""
    _check_width(width)
    from torchvision import models

    return models.mobilenet_v3_small(num_classes=num_classes, width_mult=width)


@register_model("mobilenetv2", input_size=224, num_classes=1000)
def mobilenetv2(num_classes: int = 1000, width: float = 1.0) -> nn.Module:
    """MobileNetV2 (torchvision)."""
    _check_width(width)
    from torchvision import models

    return models.mobilenet_v2(num_classes=num_classes, width_mult=width)


@register_model("shufflenetv2", input_size=224, num_classes=1000)
def shufflenetv2(num_classes: int = 1000) -> nn.Module:
    """ShuffleNetV2 1.0x (torchvision)."""
    from torchvision import models

    return models.shufflenet_v2_x1_0(num_classes=num_classes)
