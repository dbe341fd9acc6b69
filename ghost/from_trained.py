"""A trained network's convolutions turned into Ghost modules that start near them.

The paper trains Ghost networks from scratch. Here each conv + BN (+ ReLU) unit that
``ghostify`` would replace keeps ``m = ceil(n / s)`` of its ``n`` trained filters as the
Ghost module's intrinsic ones (primary conv and BN copied), and every other output map
becomes a ghost: a ``d x d`` depthwise filter plus bias on one intrinsic map, fitted by
least squares to the map it stands in for, on a few batches of real inputs.

Which filters stay intrinsic, and which intrinsic map each ghost is made from, is
chosen by the fits themselves: every map is fitted from every other (one small
least-squares problem each), the intrinsic set is grown greedily, each step adding the
map that most lowers the summed squared error of the best fits of the maps left out
(facility location), and the ghosts are then given to intrinsic maps, ``s - 1`` each,
by an optimal assignment on those errors. A Ghost module lays its outputs out in a
fixed order (intrinsic maps, then ghost blocks), so this reorders the unit's output
channels; the layers that read them are reordered to match, and the whole network is
checked to compute exactly what it computed before. Where that check fails (outputs
that join a residual stream, read by layers elsewhere too) the unit keeps its channel
order, and each ghost is fitted from the intrinsic map the layout gives it.

Fitted on the trained network's own maps, each layer is close to its conv, but the
errors compound: the next layer sees inputs the fit never saw. So the modules are then
refitted one by one in forward order (layer-wise reconstruction, as channel pruning's
least-squares methods do): the primary conv, by least squares from the inputs it now
gets to the intrinsic maps the trained conv gave, and the cheap operations on the
intrinsic maps it now makes. Last, each BatchNorm is given the statistics of what it now
normalises, with the scale and shift that keep its output, so that training (batch
statistics) and precise BN start from the fitted network, not a re-standardised one.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ghost.ghostify import ghostify
from ghost.module import GhostModule


@dataclass
class UnitFit:
    """How one conv unit became a Ghost module."""

    name: str
    out_channels: int
    intrinsic: int
    reordered: bool  # intrinsic filters chosen (False: the layout's, channel order kept)
    relative_error: float  # squared error of the ghosts / energy of the maps they replace


@dataclass
class GhostFitReport:
    s: int
    d: int
    units: list[UnitFit] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def relative_error(self) -> float:
        """Mean over units of the ghosts' relative squared error."""
        return sum(u.relative_error for u in self.units) / max(1, len(self.units))


class _Stop(Exception):
    """Ends a forward pass once the map it was run for is captured."""


def _pair_fits(
    sources: torch.Tensor, targets: torch.Tensor, d: int, chunk: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Least squares ``target_p ~ conv(source_i, w_ip) + b_ip`` for every pair (i, p).

    Returns the solutions ``(i, p, d*d + 1)`` (kernel, then bias) and the squared errors
    ``(i, p)``, in float64, from the normal equations of each pair, summed ``chunk``
    images at a time.
    """
    channels, wanted = sources.shape[1], targets.shape[1]
    gram = torch.zeros(channels, d * d + 1, d * d + 1, dtype=torch.float64)
    cross = torch.zeros(channels, d * d + 1, wanted, dtype=torch.float64)
    energy = torch.zeros(wanted, dtype=torch.float64)
    for source, target in zip(sources.split(chunk), targets.split(chunk), strict=True):
        batch, _, height, width = source.shape
        patches = F.unfold(source.double(), d, padding=d // 2)  # (B, C d^2, HW)
        patches = patches.view(batch, channels, d * d, height * width)
        ones = torch.ones(batch, channels, 1, height * width, dtype=patches.dtype)
        design = torch.cat([patches, ones], dim=2)  # (B, C, d^2 + 1, HW)
        flat = target.double().flatten(2)  # (B, P, HW)
        gram += torch.einsum("bcah,bcgh->cag", design, design)
        cross += torch.einsum("bcah,bph->cap", design, flat)
        energy += flat.pow(2).sum((0, 2))
    ridge = 1e-8 * gram.diagonal(dim1=1, dim2=2).sum(1).clamp_min(1e-12)
    gram = gram + ridge[:, None, None] * torch.eye(d * d + 1, dtype=gram.dtype)
    solution = torch.linalg.solve(gram, cross)  # (C, d^2 + 1, P)
    errors = (energy[None, :] - (cross * solution).sum(1)).clamp_min(0)
    return solution.transpose(1, 2), errors


def _choose_intrinsic(errors: torch.Tensor, energy: torch.Tensor, count: int) -> list[int]:
    """Greedy facility location: the ``count`` maps whose best fits of the others leave
    the least squared error (``errors[i, p]``: map ``p`` made from map ``i``; a map no
    intrinsic one covers yet costs its ``energy``, its error when made from nothing)."""
    best = energy.clone()
    chosen: list[int] = []
    for _ in range(count):
        left = torch.minimum(best[None, :], errors)  # (candidate, map)
        left.fill_diagonal_(0)  # a candidate covers itself
        if chosen:
            left[:, chosen] = 0
        totals = left.sum(1)
        totals[chosen] = float("inf")
        pick = int(totals.argmin())
        chosen.append(pick)
        best = torch.minimum(best, errors[pick])
    return sorted(chosen)


def _slots(module: GhostModule) -> list[tuple[int, int, int]]:
    """(output position, intrinsic map, cheap-conv channel) of every ghost the module keeps."""
    maps, s = module.primary_conv[0].out_channels, module.ratio
    slots, position = [], maps
    for k, kept in enumerate(module.ghosts_kept, start=1):
        for i in range(kept):
            slots.append((position, i, i * (s - 1) + k - 1))
            position += 1
    return slots


def _plan(
    errors: torch.Tensor, energy: torch.Tensor, module: GhostModule, reorder: bool
) -> tuple[list[int], list[tuple[int, int, int, int]]]:
    """Which original map sits at each output position, and each ghost's (original map,
    source original map, output position, cheap channel)."""
    maps = module.primary_conv[0].out_channels
    channels = errors.shape[0]
    slots = _slots(module)
    if not reorder:
        order = list(range(channels))
        return order, [(position, order[i], position, cheap) for position, i, cheap in slots]
    from scipy.optimize import linear_sum_assignment

    intrinsic = _choose_intrinsic(errors, energy, maps)
    ghosts = [p for p in range(channels) if p not in intrinsic]
    cost = errors[intrinsic][:, ghosts].T  # (ghost map, intrinsic index)
    slot_cost = torch.stack([cost[:, i] for _, i, _ in slots], dim=1).numpy()
    rows, columns = linear_sum_assignment(slot_cost)
    order = list(intrinsic) + [0] * (channels - maps)
    plan = []
    for row, column in zip(rows, columns, strict=True):
        position, i, cheap = slots[column]
        order[position] = ghosts[row]
        plan.append((ghosts[row], intrinsic[i], position, cheap))
    return order, plan


def _readers(graph: object, conv: nn.Conv2d, norm: nn.Module) -> list[nn.Module]:
    """The layers whose input channels are ``conv``'s output channels, as torch-pruning's
    dependency graph sees them; none when another layer's outputs are tied to them (a
    residual sum). A guess, which ``_permutes_cleanly`` checks."""
    import torch_pruning as tp

    readers = []
    for dep, _ in graph.get_pruning_group(conv, tp.prune_conv_out_channels, [0]):
        layer = dep.target.module
        if layer is conv or layer is norm or not isinstance(layer, nn.Conv2d | nn.Linear):
            continue
        if graph.is_out_channel_pruning_fn(dep.handler):
            return []
        readers.append(layer)
    return readers


@torch.no_grad()
def _permute(conv: nn.Conv2d, norm: nn.BatchNorm2d, readers: list[nn.Module], order: list[int]):
    index = torch.tensor(order, device=conv.weight.device)
    conv.weight.copy_(conv.weight[index])
    if conv.bias is not None:
        conv.bias.copy_(conv.bias[index])
    for tensor in (norm.weight, norm.bias, norm.running_mean, norm.running_var):
        tensor.copy_(tensor[index])
    for reader in readers:
        reader.weight.copy_(reader.weight[:, index])


@torch.no_grad()
def _permutes_cleanly(
    model: nn.Module,
    conv: nn.Conv2d,
    norm: nn.BatchNorm2d,
    readers: list[nn.Module],
    order: list[int],
    probe: torch.Tensor,
) -> bool:
    """Reorder the unit's outputs and its readers' inputs; keep it if the network still
    computes what it did, else undo it and say so."""
    if not readers or any(
        (isinstance(r, nn.Conv2d) and (r.groups != 1 or r.in_channels != len(order)))
        or (isinstance(r, nn.Linear) and r.in_features != len(order))
        for r in readers
    ):
        return False
    before = model(probe)
    _permute(conv, norm, readers, order)
    after = model(probe)
    if torch.allclose(before, after, rtol=1e-4, atol=1e-5 * before.abs().max().item()):
        return True
    inverse = [0] * len(order)
    for position, channel in enumerate(order):
        inverse[channel] = position
    _permute(conv, norm, readers, inverse)
    return False


@torch.no_grad()
def ghostify_trained(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    s: int = 2,
    d: int = 3,
    keep_first: bool = True,
    reconstruct: bool = True,
) -> GhostFitReport:
    """Turn ``model`` (trained, changed in place) into its Ghost version, each cheap
    operation fitted on ``batches`` (its inputs, prepared as in training).

    The units are those ``ghostify`` replaces; each is fitted on the original network's
    maps, so the report's errors are per layer, not compounded. With ``reconstruct``,
    each Ghost module is then refitted in forward order on the inputs the Ghost layers
    before it give, so that errors do not compound (layer-wise reconstruction: the
    published ResNet-20 tests at 49% right after, against chance without it). Every
    BatchNorm then gets the statistics of what it normalises (``_restate_norms``).
    """
    import torch_pruning as tp

    was_training = model.training
    model.eval()
    batches = list(batches)
    probe = batches[0][:2]
    template = ghostify(copy.deepcopy(model), s, d, keep_first)
    with torch.enable_grad():  # torch-pruning traces through autograd
        graph = tp.DependencyGraph().build_dependency(model, probe[:1])
    report = GhostFitReport(s, d, skipped=dict(template.skipped))
    fills = []
    for layer in template.changed:
        conv = model.get_submodule(layer.name)
        norm = _follower(model, layer.name)
        shape = GhostModule(conv.in_channels, conv.out_channels, 1, s, d, relu=layer.relu)
        outputs = _captured(model, norm, batches, "output")
        sources = outputs.clamp_min(0) if layer.relu else outputs
        solutions, errors = _pair_fits(sources, outputs, d)
        energy = outputs.double().pow(2).sum((0, 2, 3))
        order, plan = _plan(errors, energy, shape, reorder=True)
        reordered = _permutes_cleanly(model, conv, norm, _readers(graph, conv, norm), order, probe)
        if not reordered:
            order, plan = _plan(errors, energy, shape, reorder=False)
        replaced = [target for target, _, _, _ in plan]
        error = sum(float(errors[source, target]) for target, source, _, _ in plan)
        fills.append((layer.name, conv, norm, plan, solutions))
        report.units.append(
            UnitFit(
                layer.name,
                conv.out_channels,
                shape.primary_conv[0].out_channels,
                reordered,
                error / max(float(energy[replaced].sum()), 1e-12) if replaced else 0.0,
            )
        )
    reference = copy.deepcopy(model) if reconstruct else None  # permuted, still the same net
    ghostify(model, s, d, keep_first)
    for name, conv, norm, plan, solutions in fills:
        _fill(model.get_submodule(name), conv, norm, plan, solutions)
    model.eval()  # the new modules: BatchNorm with the statistics they were given
    for name, _conv, _norm, plan, _solutions in fills:
        if reference is not None:
            _reconstruct(model, reference, name, plan, batches)
        _restate_norms(model, model.get_submodule(name), batches)
    model.train(was_training)
    return report


@torch.no_grad()
def _restate_norms(model: nn.Module, ghost: GhostModule, batches: list[torch.Tensor]) -> None:
    """Give each BatchNorm of the Ghost module the statistics of what it now normalises,
    with the scale and shift that keep its output: the same function in eval mode, and,
    since training normalises with batch statistics close to these, in training too.
    (Left as they were, the statistics of the trained network, or an identity for the
    fitted ghosts, training and precise BN would re-standardise the maps instead.)"""
    for branch in (ghost.primary_conv, ghost.cheap_operation):
        conv, norm = branch[0], branch[1]
        made = _captured(model, conv, batches, "output").double()
        mean, var = made.mean((0, 2, 3)), made.var((0, 2, 3), unbiased=True)
        old_std = torch.sqrt(norm.running_var.double() + norm.eps)
        new_std = torch.sqrt(var + norm.eps)
        weight = norm.weight.double()
        norm.bias.copy_(
            (norm.bias.double() + weight * (mean - norm.running_mean) / old_std).float()
        )
        norm.weight.copy_((weight * new_std / old_std).float())
        norm.running_mean.copy_(mean.float())
        norm.running_var.copy_(var.float())


@torch.no_grad()
def _captured(model: nn.Module, module: nn.Module, batches: list[torch.Tensor], what: str):
    """The input or output of ``module`` on ``batches`` (the forward stops there)."""
    captured: list[torch.Tensor] = []

    def keep(_module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        captured.append((inputs[0] if what == "input" else output).detach().clone())
        raise _Stop

    handle = module.register_forward_hook(keep)
    try:
        for batch in batches:
            with contextlib.suppress(_Stop):
                model(batch)
    finally:
        handle.remove()
    return torch.cat(captured)


@torch.no_grad()
def _reconstruct(
    model: nn.Module,
    reference: nn.Module,
    name: str,
    plan: list[tuple[int, int, int, int]],
    batches: list[torch.Tensor],
) -> None:
    """Layer by layer, in forward order: refit the Ghost module's primary conv so that,
    on the inputs it now gets (after the Ghost layers before it), it gives the intrinsic
    maps the trained conv gave on the trained network's inputs; then refit its cheap
    operations on the intrinsic maps it now makes."""
    ghost: GhostModule = model.get_submodule(name)
    conv = ghost.primary_conv[0]
    cheap, cheap_norm = ghost.cheap_operation[0], ghost.cheap_operation[1]
    d = cheap.kernel_size[0]
    plain = reference.get_submodule(name)
    maps = conv.out_channels
    inputs = _captured(model, ghost, batches, "input")  # what the Ghost layers before give
    wanted = _captured(reference, plain, batches, "output")[:, :maps].double()
    patches = F.unfold(inputs.double(), conv.kernel_size, padding=conv.padding, stride=conv.stride)
    design = patches.transpose(1, 2).reshape(-1, patches.shape[1])  # (pixels, C k k)
    targets = wanted.flatten(2).transpose(1, 2).reshape(-1, maps)
    gram = design.T @ design
    gram += 1e-6 * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)
    solution = torch.linalg.solve(gram, design.T @ targets)  # (C k k, maps)
    conv.weight.copy_(solution.T.reshape(conv.weight.shape).float())
    sources = ghost.primary_conv(inputs)  # the intrinsic maps the refitted conv makes
    targets_all = _captured(reference, _follower(reference, name), batches, "output")
    solutions, _ = _pair_fits(sources, targets_all, d)
    for _target, _source, position, channel in plan:
        fitted = solutions[channel // (ghost.ratio - 1), position].float()  # map i's ghosts
        cheap.weight[channel, 0] = fitted[:-1].view(d, d)
        cheap_norm.bias[channel] = fitted[-1]


def _follower(model: nn.Module, name: str) -> nn.Module:
    """The module that follows ``name`` in its parent (a conv's BatchNorm)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    names = [each for each, _ in parent.named_children()]
    return getattr(parent, names[names.index(child) + 1])


@torch.no_grad()
def _fill(
    ghost: GhostModule,
    conv: nn.Conv2d,
    norm: nn.BatchNorm2d,
    plan: list[tuple[int, int, int, int]],
    solutions: torch.Tensor,
) -> None:
    """Copy the intrinsic filters (the first of ``conv`` and ``norm``, already in the
    module's order) and set each ghost's fitted kernel and bias; the cheap BN passes
    them through unchanged."""
    maps = ghost.primary_conv[0].out_channels
    primary, primary_norm = ghost.primary_conv[0], ghost.primary_conv[1]
    primary.weight.copy_(conv.weight[:maps])
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(primary_norm, name).copy_(getattr(norm, name)[:maps])
    primary_norm.eps = norm.eps
    cheap, cheap_norm = ghost.cheap_operation[0], ghost.cheap_operation[1]
    d = cheap.kernel_size[0]
    cheap.weight.zero_()
    cheap_norm.weight.fill_(1)
    cheap_norm.bias.zero_()
    cheap_norm.running_mean.zero_()
    cheap_norm.running_var.fill_(1 - cheap_norm.eps)  # x / sqrt(var + eps) = x
    for target, source, _position, channel in plan:
        solution = solutions[source, target].float()
        cheap.weight[channel, 0] = solution[:-1].view(d, d)
        cheap_norm.bias[channel] = solution[-1]
