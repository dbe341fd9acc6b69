"""Structured pruning of Ghost modules with torch-pruning, one intrinsic map at a time.

An intrinsic map and its ``s - 1`` ghosts live or die together: removing output
channel ``i`` of the primary conv removes channels ``i, m + i, ..., (s-1) m + i`` of the
module. torch-pruning cannot see this through the concatenation, so the module is a
leaf with this pruner, and its output is declared as ``s`` channel groups, which makes
torch-pruning choose the same positions in every group.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch_pruning as tp
from torch import nn

from ghost.module import GhostModule


def intrinsic_maps(module: GhostModule) -> int:
    return module.primary_conv[0].out_channels


def is_prunable(module: GhostModule) -> bool:
    """Only modules whose output is exactly ``s`` whole blocks can be pruned by block."""
    return module.out_channels == intrinsic_maps(module) * module.ratio


class GhostModulePruner(tp.pruner.function.BasePruningFunc):
    TARGET_MODULES = GhostModule

    def prune_out_channels(self, layer: GhostModule, idxs: Sequence[int]) -> GhostModule:
        maps, s = intrinsic_maps(layer), layer.ratio
        removed = sorted({idx % maps for idx in idxs})
        expected = sorted(k * maps + i for k in range(s) for i in removed)
        if sorted(idxs) != expected:
            raise ValueError("Ghost module channels must be pruned one intrinsic map at a time")
        conv, bn = layer.primary_conv[0], layer.primary_conv[1]
        tp.prune_conv_out_channels(conv, removed)
        tp.prune_batchnorm_out_channels(bn, removed)
        ghosts = [i * (s - 1) + k for i in removed for k in range(s - 1)]
        cheap, cheap_bn = layer.cheap_operation[0], layer.cheap_operation[1]
        tp.prune_conv_out_channels(cheap, ghosts)
        tp.prune_batchnorm_out_channels(cheap_bn, ghosts)
        cheap.in_channels = cheap.groups = conv.out_channels
        layer.out_channels = conv.out_channels * s
        return layer

    def prune_in_channels(self, layer: GhostModule, idxs: Sequence[int]) -> GhostModule:
        tp.prune_conv_in_channels(layer.primary_conv[0], list(idxs))
        return layer

    def get_out_channels(self, layer: GhostModule) -> int:
        return layer.out_channels

    def get_in_channels(self, layer: GhostModule) -> int:
        return layer.primary_conv[0].in_channels

    def get_out_channel_groups(self, layer: GhostModule) -> int:
        return layer.ratio


def ghost_pruning_setup(model: nn.Module) -> tuple[dict, list[nn.Module]]:
    """``customized_pruners`` for torch-pruning, and the Ghost modules it must leave alone."""
    modules = [m for m in model.modules() if isinstance(m, GhostModule)]
    return {GhostModule: GhostModulePruner()}, [m for m in modules if not is_prunable(m)]


def ghost_ratios(pruner: tp.pruner.BasePruner, ratios: dict[GhostModule, float]) -> None:
    """Give Ghost modules ratios of their own in ``pruner``, as ``pruning_ratio_dict``
    does for the layers torch-pruning knows.

    torch-pruning (1.6) files a ``pruning_ratio_dict`` entry only under its own layer
    types and silently drops a customized one, so this registers each Ghost module the
    way it registers a layer there: a scope of its own (ranked alone, as with local
    pruning) with the ratio scheduled over the pruner's iterative steps.
    """
    for index, (module, ratio) in enumerate(ratios.items()):
        scope = f"_Ghost_Module_Scope_{index}"
        pruner._layer_to_scope[module] = (scope, [module])
        pruner.pruning_ratio_dict[module] = pruner.iterative_pruning_ratio_scheduler(
            ratio, pruner.iterative_steps
        )


def _channel_scores(module: GhostModule, kind: str, p: int) -> torch.Tensor:
    """One score per output channel of a Ghost module, from the filter that makes it."""
    maps, s = intrinsic_maps(module), module.ratio
    primary, primary_bn = module.primary_conv[0], module.primary_conv[1]
    cheap, cheap_bn = module.cheap_operation[0], module.cheap_operation[1]

    def per_filter(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> torch.Tensor:
        if kind == "bn_scale":
            return bn.weight.detach().abs()
        weight = conv.weight.detach().flatten(1)
        if kind == "taylor":
            grad = conv.weight.grad
            if grad is None:
                return weight.abs().sum(1)
            return (weight * grad.flatten(1)).abs().sum(1)
        return weight.abs().pow(p).sum(1)

    intrinsic = per_filter(primary, primary_bn)
    ghosts = per_filter(cheap, cheap_bn).view(maps, s - 1).t().reshape(-1)
    return torch.cat([intrinsic, ghosts])[: module.out_channels]


class GhostAwareImportance:
    """torch-pruning importance that also scores channels made inside Ghost modules.

    torch-pruning's importances skip layers they do not know, so a group of Ghost modules
    (Ghost-VGG-16 is nothing else) would get no score at all and never be pruned.
    """

    def __init__(self, base: tp.importance.Importance, kind: str, p: int = 1) -> None:
        self.base, self.kind, self.p = base, kind, p

    @torch.no_grad()
    def __call__(self, group: tp.Group) -> torch.Tensor | None:
        base = self.base(group)
        if self.kind == "random":
            return base
        scores = None
        for index, (dep, idxs) in enumerate(group):
            if not isinstance(dep.layer, GhostModule):
                continue
            if getattr(dep.pruning_fn, "__name__", "") != "prune_out_channels":
                continue
            root_idxs = group[index].root_idxs
            channel = _channel_scores(dep.layer, self.kind, self.p)[list(idxs)]
            if scores is None:
                scores = torch.zeros(len(root_idxs), dtype=torch.float32)
            scores.scatter_add_(0, torch.tensor(root_idxs), channel.float().cpu())
        if scores is None:
            return base
        scores = scores / scores.mean().clamp_min(1e-12)
        if base is None:
            return scores
        return (base.float().cpu() + scores) / 2
