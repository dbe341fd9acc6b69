"""``baseline``: train a backbone as it is, the reference every technique is read against."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from compress.options import Options, option
from compress.registry import create_model
from compress.techniques.base import Technique, register_technique


@dataclass
class BaselineConfig(Options):
    model: str = option("resnet20", "model from `compress models`, or timm:NAME")


@register_technique("baseline")
class Baseline(Technique):
    stage = "build"
    config_cls = BaselineConfig
    summary = "train a backbone unchanged"

    def build_model(self, config: BaselineConfig, num_classes: int, image_size: int) -> nn.Module:
        return create_model(config.model, num_classes=num_classes)

    def reference_model(self, config: BaselineConfig) -> str:
        return config.model  # a compressed copy of it is read against it as it is

    def on_backbone(self, backbone: str) -> dict[str, str]:
        return {"model": backbone}

    def label(self, config: BaselineConfig) -> str:
        return config.model.replace(":", "-")
