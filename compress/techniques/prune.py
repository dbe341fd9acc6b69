"""``prune``: remove channels (torch-pruning) or mask weights (torch.nn.utils.prune).

Channel pruning makes a smaller dense network; weight masking keeps every tensor's
shape and only zeroes entries, so its MACs fall only on sparse hardware. Every result
says which of the two it is, with dense and non-zero counts side by side.

torch-pruning (and the Ghost-aware pruner built on it) is imported where it is used: it
imports timm and torchvision, about 3 s that every process which never prunes (a
``compress --help``, a baseline run, a study worker) would pay otherwise.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from compress.errors import UsageError
from compress.measure import count_macs, forward_with_hooks
from compress.options import Options, option
from compress.reports import MetricRow, count, percent, scaled, share
from compress.techniques.base import RunContext, Technique, register_technique
from ghost.module import GhostModule

if TYPE_CHECKING:
    import torch_pruning as tp

IMPORTANCES = ("l1", "l2", "bn_scale", "taylor", "random")
MAX_RATIO = 0.99
# How far --target-macs may land from its target (a fraction of the unpruned MACs):
# channels are whole, so the MAC fraction moves in steps. What the README promises.
TARGET_TOLERANCE = 0.015
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
        "channels: share of each layer's channels removed (each keeps at least one, or "
        "--round-to); weights: sparsity",
        low=0,
        high=MAX_RATIO,
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


def protected_layers(model: nn.Module, unprunable_ghosts: list[nn.Module]) -> list[nn.Module]:
    """First layer, classifier, Ghost modules that cannot lose whole maps (as
    ``ghost_pruning_setup`` found them), model's own."""
    first = next(m for m in model.modules() if isinstance(m, (nn.Conv2d, GhostModule)))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    own = model.pruning_protected() if hasattr(model, "pruning_protected") else []
    return [first, *linears[-1:], *own, *unprunable_ghosts]


class KeepStrongest:
    """An importance whose ``keep`` strongest channels of every layer score infinity, so
    that global ranking never empties a layer (torch-pruning would skip it whole, and
    the MACs kept would jump back up as the ratio grows)."""

    def __init__(self, base: Any, keep: int) -> None:
        self.base, self.keep = base, keep

    def __call__(self, group: tp.Group) -> torch.Tensor | None:
        scores = self.base(group)
        if scores is None:
            return None
        root = group[0].dep.target.module
        blocks = root.ratio if isinstance(root, GhostModule) else 1  # ghosts share a score
        per_unit = scores.view(blocks, -1).mean(0)
        strongest = per_unit.topk(min(self.keep, len(per_unit))).indices
        scores = scores.clone().view(blocks, -1)
        scores[:, strongest] = float("inf")
        return scores.view(-1)


def _importance(kind: str) -> tp.importance.Importance:
    import torch_pruning as tp

    from ghost.pruning import GhostAwareImportance

    base = {
        "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
        "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
        "bn_scale": tp.importance.BNScaleImportance,
        "taylor": tp.importance.GroupTaylorImportance,
        "random": tp.importance.RandomImportance,
    }[kind]()
    return GhostAwareImportance(base, kind, p=2 if kind == "l2" else 1)


def _units(module: nn.Module) -> int:
    """What channel pruning removes from ``module`` one at a time: its output channels,
    or, in a Ghost module, its intrinsic maps (each leaves with its ghosts)."""
    if isinstance(module, GhostModule):
        return module.primary_conv[0].out_channels
    return module.out_channels if isinstance(module, nn.Conv2d) else module.out_features


def floored_ratios(modules: list[nn.Module], ratio: float, keep: int) -> dict[nn.Module, float]:
    """Per-layer ratios for the layers that ``ratio`` would leave with fewer than ``keep``
    channels: theirs keeps exactly ``keep``.

    torch-pruning keeps ``int(n (1 - ratio))`` of a layer's ``n`` channels and skips a
    layer it would empty, so without a floor a 16-channel layer loses 14 at ratio 0.9 and
    none at 0.95, and the MACs kept jump back up as the ratio grows. With it, a larger
    ratio never keeps more of any layer: the MACs kept fall monotonically."""
    floors = {}
    for module in modules:
        units = _units(module)
        if int(units * (1 - ratio)) < keep:
            floors[module] = max(0.0, 1 - (min(keep, units) + 0.5) / units)
    return floors


def _pruner(model: nn.Module, config: PruneConfig, ratio: float, example: torch.Tensor):
    import torch_pruning as tp

    from ghost.pruning import ghost_pruning_setup, ghost_ratios

    pruners, unprunable_ghosts = ghost_pruning_setup(model)
    protected = protected_layers(model, unprunable_ghosts)
    ghosts = [m for m in model.modules() if isinstance(m, GhostModule)]
    # Not layers of their own here: what is protected, the convs inside a Ghost module
    # (pruned through it) and depthwise convs (pruned with the layer that feeds them).
    skipped = {id(m) for layer in protected for m in layer.modules()}
    skipped |= {id(m) for ghost in ghosts for m in ghost.modules() if m is not ghost}
    roots = [
        m
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear, GhostModule))
        and id(m) not in skipped
        and not (isinstance(m, nn.Conv2d) and m.groups > 1)
    ]
    floors = floored_ratios(roots, ratio, config.round_to or 1)
    pruner = tp.pruner.BasePruner(
        model,
        example,
        importance=KeepStrongest(_importance(config.importance), config.round_to or 1),
        global_pruning=config.scope == "global",
        pruning_ratio=ratio,
        pruning_ratio_dict={m: r for m, r in floors.items() if not isinstance(m, GhostModule)},
        iterative_steps=config.steps,
        ignored_layers=protected,
        round_to=config.round_to,
        customized_pruners=pruners,
        root_module_types=[nn.Conv2d, nn.Linear, GhostModule],
    )
    ghost_ratios(pruner, {m: r for m, r in floors.items() if isinstance(m, GhostModule)})
    return pruner


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
    low, high = 0.0, MAX_RATIO
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


def prunable_fraction(model: nn.Module, config: PruneConfig, example: torch.Tensor) -> float:
    """The least MAC fraction channel pruning can leave (on a copy, at the largest ratio,
    where every layer it may touch keeps its floor of channels): what protected layers,
    Ghost modules that cannot lose whole maps and those floors keep. The MACs kept fall
    monotonically with the ratio, so every target above this is reachable."""
    trial = copy.deepcopy(model).eval()
    base = count_macs(trial, example)
    _pruner(trial, dataclasses.replace(config, steps=1), MAX_RATIO, example).step()
    return count_macs(trial, example) / base


def _unprunable_reason(model: nn.Module) -> str:
    from ghost.pruning import ghost_pruning_setup

    _, kept = ghost_pruning_setup(model)
    if not kept:
        return "its first conv, classifier and residual streams are protected"
    widths = sorted({m.out_channels for m in kept})
    ratios = sorted({m.ratio for m in kept})
    return (
        f"{len(kept)} Ghost modules keep every map: s={', '.join(map(str, ratios))} does not "
        f"divide their widths ({', '.join(map(str, widths))}), so no intrinsic map can leave "
        "with all its ghosts (use an s that divides them, e.g. 2 or 4, or prune the plain net)"
    )


@register_technique("prune")
class Prune(Technique):
    stage = "post"
    restructures = True
    config_cls = PruneConfig
    metric_rows = (
        MetricRow("prune_kind", "Pruning", optional=True),
        MetricRow("unpruned_params", "Unpruned params", count, optional=True),
        MetricRow("unpruned_macs", "Unpruned MACs", scaled, optional=True),
        MetricRow("target_macs", "Target MACs", scaled, optional=True),
        MetricRow("macs_fraction", "MACs kept", share, optional=True),
        MetricRow("params_fraction", "Params kept", share, optional=True),
        MetricRow("nonzero_macs_est", "Non-zero MACs (est.)", scaled, optional=True),
        MetricRow("before_prune_val_acc", "Top-1 before pruning", percent, optional=True),
    )
    summary = "structured channel pruning (torch-pruning) or unstructured weight masking"

    def check_model(self, model: nn.Module, config: PruneConfig, context: RunContext) -> None:
        if config.method == "weights":
            return
        floor = prunable_fraction(model, config, context.example(torch.device("cpu")))
        wanted = config.target_macs
        if floor > 0.95 or (wanted is not None and floor > wanted + TARGET_TOLERANCE):
            goal = f"--target-macs {wanted}" if wanted is not None else "any channel"
            raise UsageError(
                f"channel pruning cannot reach {goal}: at most {100 * (1 - floor):.1f}% of the "
                f"MACs can go, because {_unprunable_reason(model)}"
            )

    def post_train(self, model: nn.Module, config: PruneConfig, context: RunContext) -> nn.Module:
        device = next(model.parameters()).device
        example = context.example(device)
        model.eval()
        delivered = context.history[context.delivered_from or 0 :] if context.history else []
        context.metrics.update(
            unpruned_params=sum(p.numel() for p in model.parameters()),
            unpruned_macs=count_macs(model, example),
            before_prune_val_acc=context.history[-1]["val_acc"] if context.history else None,
            before_prune_best_val_acc=max((r["val_acc"] for r in delivered), default=None),
        )
        if config.method == "weights":
            return self._mask(model, config, context)
        ratio = config.ratio
        if config.target_macs is not None:
            ratio = ratio_for_target(model, config, example)
            self._say_how_near(model, config, ratio, example, context)
        context.metrics["prune_ratio_used"] = ratio
        pruner = _pruner(model, config, ratio, example)
        for step in range(config.steps):
            if config.importance == "taylor":
                _taylor_gradients(model, context)
            pruner.step()
            model.zero_grad()
            context.network_changed()
            context.console.print(
                f"prune step {step + 1}/{config.steps}: {count_macs(model.eval(), example):,} MACs",
                highlight=False,
            )
            self._finetune(model, config, context)
        return model

    @staticmethod
    def _say_how_near(
        model: nn.Module,
        config: PruneConfig,
        ratio: float,
        example: torch.Tensor,
        context: RunContext,
    ) -> None:
        """A line when the nearest reachable MAC fraction is further from ``--target-macs``
        than the usual step (layers with few channels move it in large steps)."""
        trial = copy.deepcopy(model).eval()
        _pruner(trial, dataclasses.replace(config, steps=1), ratio, example).step()
        reached = count_macs(trial, example) / context.metrics["unpruned_macs"]
        if abs(reached - config.target_macs) > TARGET_TOLERANCE:
            context.console.print(
                f"--target-macs {config.target_macs}: the nearest reachable is "
                f"{100 * reached:.1f}% of the MACs (ratio {ratio:.3f}); its layers' channel "
                "counts move the MACs in steps this large",
                highlight=False,
            )

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
        context.network_changed()
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
        context.train_more(model, recipe, "finetune")

    def report(self, model: nn.Module, config: PruneConfig, context: RunContext) -> dict[str, Any]:
        example = context.example(next(model.parameters()).device)
        model.eval()
        macs = count_macs(model, example)
        before = context.metrics
        result = {
            "prune_kind": WEIGHTS if config.method == "weights" else CHANNELS,
            "nonzero_macs_est": nonzero_macs(model, example),
        }
        if config.method == "channels":
            result["macs_fraction"] = macs / before["unpruned_macs"]
            result["params_fraction"] = (
                sum(p.numel() for p in model.parameters()) / before["unpruned_params"]
            )
            if config.target_macs is not None:
                result["target_macs"] = round(config.target_macs * before["unpruned_macs"])
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
