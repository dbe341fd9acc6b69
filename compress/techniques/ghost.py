"""``ghost``: GhostNet from scratch, or any backbone with its convs made Ghost modules."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from torch import nn

from compress.errors import UsageError
from compress.options import Options, option
from compress.registry import create_model
from compress.reports import MetricRow
from compress.techniques.base import RunContext, Technique, register_technique
from ghost.ghostify import ghostify
from ghost.module import GhostModule, check_ghost_options

GHOST_MODELS = (
    "ghostnet",
    "ghost_vgg16",
    "ghost_resnet20",
    "ghost_resnet32",
    "ghost_resnet44",
    "ghost_resnet56",
    "ghost_resnet110",
)


def builds_ghostnet(options: dict[str, Any]) -> bool:
    return options.get("backbone") is None and options.get("model", "ghostnet") == "ghostnet"


@dataclass
class GhostConfig(Options):
    model: str = option("ghostnet", "a Ghost model of the paper", choices=GHOST_MODELS)
    backbone: str | None = option(None, "ghostify this model instead (e.g. vgg16, timm:NAME)")
    width: float = option(
        1.0,
        "GhostNet width multiplier",
        low=0,
        low_open=True,
        search=("choice", 0.5, 0.75, 1.0, 1.3),
        applies=lambda options: builds_ghostnet(options),
    )
    s: int = option(
        2, "ratio s: 1/s of the maps come from the real conv", low=2, search=("int", 2, 5)
    )
    d: int = option(3, "cheap depthwise kernel d (odd)", low=1, search=("choice", 1, 3, 5, 7))
    keep_first: bool = option(True, "leave the backbone's first conv plain")
    cifar_strides: bool = option(
        False, "GhostNet's CIFAR variant: 8x instead of 32x downsampling (4x the MACs at 32px)"
    )

    def check(self) -> None:
        try:
            check_ghost_options(self.s, self.d)
        except ValueError as error:
            raise UsageError(str(error)) from None
        if self.backbone is not None and self.model != "ghostnet":
            raise UsageError("give either --model or --backbone, not both")


@register_technique("ghost")
class Ghost(Technique):
    stage = "build"
    config_cls = GhostConfig
    summary = "Ghost modules: GhostNet, or a ghostified backbone"
    metric_rows = (MetricRow("ghost_modules", "Ghost modules", optional=True),)

    def build_model(self, config: GhostConfig, num_classes: int, image_size: int) -> nn.Module:
        if builds_ghostnet(dataclasses.asdict(config)):
            return create_model(
                "ghostnet",
                num_classes=num_classes,
                width=config.width,
                s=config.s,
                d=config.d,
                cifar=config.cifar_strides,
            )
        if config.backbone is None:
            return create_model(
                config.model,
                num_classes=num_classes,
                s=config.s,
                d=config.d,
                keep_first=config.keep_first,
            )
        model = create_model(config.backbone, num_classes=num_classes)
        ghostify(model, config.s, config.d, config.keep_first)
        return model

    def report(self, model: nn.Module, config: GhostConfig, context: RunContext) -> dict[str, Any]:
        return {"ghost_modules": sum(isinstance(m, GhostModule) for m in model.modules())}

    def on_backbone(self, backbone: str) -> dict[str, str]:
        return {"model": backbone} if backbone in GHOST_MODELS else {"backbone": backbone}

    def reference_model(self, config: GhostConfig) -> str:
        if config.backbone:
            return config.backbone
        return "mobilenetv3_large" if config.model == "ghostnet" else config.model[len("ghost_") :]

    def label(self, config: GhostConfig) -> str:
        base = config.backbone.replace(":", "-") if config.backbone else config.model
        base = base.removeprefix("ghost_")
        return f"ghost-{base}-s{config.s}d{config.d}"
