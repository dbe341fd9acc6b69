"""``ghost``: a Ghost model of the paper (GhostNet, Ghost-VGG-16, Ghost-ResNets) from
scratch, or any backbone with its convs made Ghost modules (``ghostify``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from compress.errors import UsageError
from compress.options import Options, option
from compress.registry import create_model, get_entry, models_of
from compress.reports import MetricRow
from compress.techniques.base import RunContext, Technique, register_technique
from compress.techniques.baseline import BaselineConfig
from ghost.from_trained import ghostify_trained
from ghost.ghostify import ghostify
from ghost.module import GhostModule, check_ghost_options

GHOST_MODELS = tuple(models_of("ghost"))
# What s and d mean, for every command that takes them.
S_HELP = "Ghost ratio s: 1/s of the maps come from the real conv (>= 2)"
D_HELP = "Ghost cheap depthwise kernel d (odd)"


def takes(options: dict[str, Any], option_name: str) -> bool:
    """Whether the network these options build takes ``option_name`` (a ghostified
    backbone takes none of a Ghost model's own, e.g. GhostNet's width)."""
    if options.get("backbone") is not None:
        return False
    return option_name in get_entry(options.get("model", "ghostnet")).options


@dataclass
class GhostConfig(Options):
    model: str = option("ghostnet", "a Ghost model of the paper", choices=GHOST_MODELS)
    backbone: str | None = option(None, "ghostify this model instead (e.g. vgg16, timm:NAME)")
    width: float = option(
        1.0,
        "width multiplier (GhostNet)",
        low=0,
        low_open=True,
        high=8,
        search=("choice", 0.5, 0.75, 1.0, 1.3),
        applies=lambda options: takes(options, "width"),
    )
    s: int = option(2, S_HELP, low=2, search=("int", 2, 5))
    d: int = option(3, D_HELP, low=1, search=("choice", 1, 3, 5, 7))
    keep_first: bool = option(True, "leave the backbone's first conv plain")
    cifar_strides: bool = option(
        False, "GhostNet's CIFAR variant: 8x instead of 32x downsampling (4x the MACs at 32px)"
    )
    fit_images: int = option(
        512,
        "--backbone with --init of its trained weights: training images on which each "
        "cheap operation is fitted to the maps it replaces",
        low=1,
    )
    reconstruct: bool = option(
        True,
        "--backbone with --init: then refit each Ghost module, in forward order, on the "
        "inputs the ones before it give (layer-wise reconstruction)",
    )

    def check(self) -> None:
        try:
            check_ghost_options(self.s, self.d)
        except ValueError as error:
            raise UsageError(str(error)) from None
        if self.backbone is not None and self.model != "ghostnet":
            raise UsageError("give either --model or --backbone, not both")
        given = {"width": self.width != 1.0, "cifar": self.cifar_strides}
        for name, changed in given.items():
            if changed and not takes({"model": self.model, "backbone": self.backbone}, name):
                flag = "--cifar-strides" if name == "cifar" else f"--{name}"
                raise UsageError(f"{flag} does not apply to {self.backbone or self.model}")


@register_technique("ghost")
class Ghost(Technique):
    stage = "build"
    config_cls = GhostConfig
    summary = "Ghost modules: GhostNet, or a ghostified backbone"
    metric_rows = (MetricRow("ghost_modules", "Ghost modules", optional=True),)

    def build_model(self, config: GhostConfig, num_classes: int, image_size: int) -> nn.Module:
        if config.backbone is not None:
            model = create_model(config.backbone, num_classes=num_classes)
            ghostify(model, config.s, config.d, config.keep_first)
            return model
        options = {
            "width": config.width,
            "s": config.s,
            "d": config.d,
            "keep_first": config.keep_first,
            "cifar": config.cifar_strides,
        }
        taken = get_entry(config.model).options
        chosen = {name: value for name, value in options.items() if name in taken}
        return create_model(config.model, num_classes=num_classes, **chosen)

    def made_from(self, config: GhostConfig) -> tuple[str, BaselineConfig] | None:
        """A ghostified backbone starts from the plain backbone's trained weights."""
        return None if config.backbone is None else ("baseline", BaselineConfig(config.backbone))

    def from_trained(
        self, config: GhostConfig, trained: nn.Module, context: RunContext
    ) -> tuple[nn.Module, dict[str, Any]]:
        """The trained backbone's convs as Ghost modules: trained filters kept as the
        intrinsic ones, cheap operations fitted by least squares (``ghost.from_trained``)."""
        device = torch.device("cpu")
        batch = min(config.fit_images, 128)
        count = -(-config.fit_images // batch)
        batches = [x for x, _ in context.training_batches(device, count, batch)]
        start = time.perf_counter()
        fit = ghostify_trained(
            trained.to(device), batches, config.s, config.d, config.keep_first, config.reconstruct
        )
        reordered = sum(unit.reordered for unit in fit.units)
        context.console.print(
            f"ghost from trained weights: {len(fit.units)} convs, {reordered} with their "
            f"intrinsic filters chosen, ghosts fitted on {sum(map(len, batches))} images "
            f"(mean relative squared error {fit.relative_error:.3f})",
            highlight=False,
        )
        return trained, {
            "method": "intrinsic filters kept, cheap operations fitted by least squares"
            + (", then reconstructed layer by layer" if config.reconstruct else ""),
            "fit_images": sum(map(len, batches)),
            "units": len(fit.units),
            "reordered_units": reordered,
            "relative_error": fit.relative_error,
            "unit_errors": {unit.name: unit.relative_error for unit in fit.units},
            "time_s": time.perf_counter() - start,
        }

    def report(self, model: nn.Module, config: GhostConfig, context: RunContext) -> dict[str, Any]:
        return {"ghost_modules": sum(isinstance(m, GhostModule) for m in model.modules())}

    def on_backbone(self, backbone: str) -> dict[str, str]:
        return {"model": backbone} if backbone in GHOST_MODELS else {"backbone": backbone}

    def reference_model(self, config: GhostConfig) -> str | None:
        return config.backbone or get_entry(config.model).reference

    def label(self, config: GhostConfig) -> str:
        base = config.backbone.replace(":", "-") if config.backbone else config.model
        base = base.removeprefix("ghost_")
        return f"ghost-{base}-s{config.s}d{config.d}"
