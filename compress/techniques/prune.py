"""``prune``: remove channels (torch-pruning) or mask weights (torch.nn.utils.prune).

Channel pruning makes a smaller dense network; weight masking keeps every tensor's
shape and only zeroes entries, so its MACs fall only on sparse hardware. Every result
says which of the two it is, with dense and non-zero counts side by side.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch import nn
from torch.nn.utils import prune as torch_prune

from compress.engine import train
from compress.errors import UsageError
from compress.measure import count_macs, forward_with_hooks
from compress.options import Options, option
from compress.techniques.base import RunContext, Technique, register_technique
from ghost.module import GhostModule
from ghost.pruning import GhostAwareImportance, ghost_pruning_setup

IMPORTANCES = ("l1", "l2", "bn_scale", "taylor", "random")
CHANNELS, WEIGHTS = "channels removed", "weights masked"


@dataclass
class PruneConfig(Options):
    method: str = option(
        "channels",
        "channels (structured) or weights (unstructured)",
        choices=("channels", "weights"),
    )
    ratio: float = option(
        0.5,
        "channels: share of each layer's channels removed; weights: sparsity",
        low=0,
        high=0.99,
        search=("float", 0.1, 0.9),
    )
    target_macs: float | None = option(
        None,
        "channels: prune until MACs are this fraction of the unpruned net (not --ratio)",
        low=0,
        high=1,
        low_open=True,
        high_open=True,
    )
    importance: str = option("l1", "channel/weight importance", choices=IMPORTANCES)
    scope: str = option("layer", "rank within each layer, or globally", choices=("layer", "global"))
    steps: int = option(1, "iterative pruning steps, each followed by fine-tuning", low=1)
    round_to: int | None = option(None, "keep channel counts a multiple of this", low=1)
    finetune_epochs: int = option(2, "fine-tuning epochs after each pruning step", low=0)
    finetune_lr: float | None = option(
        None, "fine-tuning lr (default: --lr / 10)", low=0, low_open=True
    )

    def check(self) -> None:
        if self.method == "weights" and self.importance not in ("l1", "random"):
            raise UsageError("weight masking ranks by --importance l1 or random only")
        if self.method == "weights" and (self.target_macs or self.round_to):
            raise UsageError("--target-macs and --round-to apply to channel pruning only")


def protected_layers(model: nn.Module) -> list[nn.Module]:
    """First layer, classifier, Ghost modules that cannot lose whole maps, model's own."""
    first = next(m for m in model.modules() if isinstance(m, (nn.Conv2d, GhostModule)))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    own = model.pruning_protected() if hasattr(model, "pruning_protected") else []
    _, unprunable_ghosts = ghost_pruning_setup(model)
    return [first, *linears[-1:], *own, *unprunable_ghosts]


def _importance(kind: str) -> tp.importance.Importance:
    base = {
        "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
        "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
        "bn_scale": tp.importance.BNScaleImportance,
        "taylor": tp.importance.GroupTaylorImportance,
        "random": tp.importance.RandomImportance,
    }[kind]()
    return GhostAwareImportance(base, kind, p=2 if kind == "l2" else 1)


def _pruner(model: nn.Module, config: PruneConfig, ratio: float, example: torch.Tensor):
    pruners, _ = ghost_pruning_setup(model)
    return tp.pruner.BasePruner(
        model,
        example,
        importance=_importance(config.importance),
        global_pruning=config.scope == "global",
        pruning_ratio=ratio,
        iterative_steps=config.steps,
        ignored_layers=protected_layers(model),
        round_to=config.round_to,
        customized_pruners=pruners,
        root_module_types=[nn.Conv2d, nn.Linear, GhostModule],
    )


def _taylor_gradients(model: nn.Module, context: RunContext, batches: int = 4) -> None:
    """Gradients of the loss on a few training batches, which Taylor importance reads."""
    model.zero_grad()
    model.train()
    device = next(model.parameters()).device
    for inputs, labels in context.training_batches(device, batches, 64):
        nn.functional.cross_entropy(model(inputs), labels).backward()


def ratio_for_target(model: nn.Module, config: PruneConfig, example: torch.Tensor) -> float:
    """The per-layer ratio whose pruned copy lands closest to ``target_macs``.

    Bisection on pruned copies; channel counts are whole numbers, so the MAC fraction
    jumps, and the ratio on whichever side of the jump is nearer the target wins.
    """
    base = count_macs(model, example)
    low, high = 0.0, 0.99
    best, best_gap = high, float("inf")
    for _ in range(12):
        middle = (low + high) / 2
        trial = copy.deepcopy(model)
        _pruner(trial, dataclasses.replace(config, steps=1), middle, example).step()
        fraction = count_macs(trial, example) / base
        if abs(fraction - config.target_macs) < best_gap:
            best, best_gap = middle, abs(fraction - config.target_macs)
        if fraction > config.target_macs:
            low = middle
        else:
            high = middle
    return best


@register_technique("prune")
class Prune(Technique):
    stage = "post"
    config_cls = PruneConfig
    summary = "structured channel pruning (torch-pruning) or unstructured weight masking"

    def post_train(self, model: nn.Module, config: PruneConfig, context: RunContext) -> nn.Module:
        device = next(model.parameters()).device
        example = context.example(device)
        model.eval()
        self._before = {
            "unpruned_params": sum(p.numel() for p in model.parameters()),
            "unpruned_macs": count_macs(model, example),
        }
        if config.method == "weights":
            return self._mask(model, config, context)
        ratio = config.ratio
        if config.target_macs is not None:
            ratio = ratio_for_target(model, config, example)
        self._ratio = ratio
        pruner = _pruner(model, config, ratio, example)
        for step in range(config.steps):
            if config.importance == "taylor":
                _taylor_gradients(model, context)
            pruner.step()
            model.zero_grad()
            context.console.print(
                f"prune step {step + 1}/{config.steps}: {count_macs(model.eval(), example):,} MACs",
                highlight=False,
            )
            self._finetune(model, config, context)
        return model

    def _mask(self, model: nn.Module, config: PruneConfig, context: RunContext) -> nn.Module:
        model.to(memory_format=torch.contiguous_format)  # torch's pruning views weights flat
        targets = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        method = (
            torch_prune.L1Unstructured
            if config.importance == "l1"
            else torch_prune.RandomUnstructured
        )
        if config.scope == "global":
            torch_prune.global_unstructured(targets, method, amount=config.ratio)
        else:
            for module, name in targets:
                method.apply(module, name, amount=config.ratio)
        self._finetune(model, config, context)
        for module, name in targets:
            torch_prune.remove(module, name)  # masks made permanent: plain zeros
        return model

    def _finetune(self, model: nn.Module, config: PruneConfig, context: RunContext) -> None:
        if not config.finetune_epochs:
            return
        recipe = dataclasses.replace(
            context.train,
            epochs=config.finetune_epochs,
            lr=config.finetune_lr or context.train.lr / 10,
            warmup_epochs=0.0,
        )
        train(model, context.data, recipe, console=context.console)

    def report(self, model: nn.Module, config: PruneConfig, context: RunContext) -> dict[str, Any]:
        example = context.example(next(model.parameters()).device)
        model.eval()
        macs = count_macs(model, example)
        result = {
            "prune_kind": WEIGHTS if config.method == "weights" else CHANNELS,
            **self._before,
            "nonzero_macs_est": nonzero_macs(model, example),
        }
        if config.method == "channels":
            result["prune_ratio_used"] = self._ratio
            if config.target_macs is not None:
                result["target_macs"] = round(config.target_macs * self._before["unpruned_macs"])
                result["achieved_macs"] = macs
        return result


def nonzero_macs(model: nn.Module, example: torch.Tensor) -> int:
    """MACs that multiply a non-zero weight: what sparse kernels could skip to (estimated)."""
    total = 0

    def hook(module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        positions = output.numel() // output.shape[1]
        total += positions * int(module.weight.count_nonzero())

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    forward_with_hooks(model, example, layers, hook)
    return total
