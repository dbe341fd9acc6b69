"""The paper's starting observation, measured: feature maps come in near-duplicate pairs.

Figure 1 of the paper shows maps of ResNet-50's first residual group in which one map of
a pair is nearly a cheap transform of the other; Table 1 fits a d x d depthwise filter
from one map of such a pair to the other. Both are reproduced here for any layer of
any network: cosine similarity over every pair of maps, the most similar disjoint pairs,
and the least-squares d x d filter (plus bias) that maps one to its partner.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from compress.errors import UsageError
from compress.measure import forward_with_hooks


def default_layer(model: nn.Module, image: torch.Tensor) -> str:
    """``layer1`` (the paper's first residual group) where it exists; else the module with
    the most channels at the highest resolution any 4-D output has, the last such one."""
    names = dict(model.named_modules())
    if "layer1" in names:
        return "layer1"
    shapes: dict[str, torch.Size] = {}
    module_names = {module: name for name, module in names.items() if name}

    def record(module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            shapes[module_names[module]] = output.shape

    forward_with_hooks(model, image, module_names, record)
    if not shapes:
        raise UsageError("the model produces no 4-D feature maps")
    return max(reversed(shapes), key=lambda n: (shapes[n][2] * shapes[n][3], shapes[n][1]))


def feature_maps(model: nn.Module, layer: str, image: torch.Tensor) -> torch.Tensor:
    """The ``(C, H, W)`` output of module ``layer`` for one image ``(1, 3, H, W)``."""
    modules = dict(model.named_modules())
    if layer not in modules:
        near = [n for n in modules if n and layer in n][:5]
        hint = f"; e.g. {', '.join(near)}" if near else ""
        raise UsageError(f"no layer {layer!r} in the model{hint}")
    outputs: list[torch.Tensor] = []
    forward_with_hooks(model, image, [modules[layer]], lambda _m, _i, out: outputs.append(out))
    output = outputs[0]
    if not isinstance(output, torch.Tensor) or output.dim() != 4:
        raise UsageError(f"layer {layer!r} does not output feature maps (N, C, H, W)")
    return output[0].float()


def similarity_matrix(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarity of every pair of maps, and which maps are alive (not all zero).

    Rows and columns of dead maps (a ReLU that never fired) are zero: they duplicate
    nothing and nothing duplicates them.
    """
    flat = maps.flatten(1)
    alive = flat.norm(dim=1) > 0
    unit = F.normalize(flat, dim=1)
    similarity = unit @ unit.T
    similarity[~alive] = 0
    similarity[:, ~alive] = 0
    return similarity, alive


@dataclass
class Redundancy:
    """How much of a layer's output is ghosts, at one similarity threshold."""

    channels: int
    dead: int
    threshold: float
    pair_similarities: torch.Tensor  # every unordered pair of live maps
    share_pairs_above: float  # of live pairs
    share_maps_with_ghost: float  # of live maps: some other map is above the threshold

    def histogram(self, bins: int = 10) -> list[tuple[float, float, int]]:
        """(low, high, count) of the pair similarities over [-1, 1]."""
        counts = torch.histc(self.pair_similarities, bins=bins, min=-1, max=1)
        edges = torch.linspace(-1, 1, bins + 1).tolist()
        return [(edges[i], edges[i + 1], int(counts[i])) for i in range(bins)]


def redundancy(maps: torch.Tensor, threshold: float = 0.9) -> Redundancy:
    similarity, alive = similarity_matrix(maps)
    live = similarity[alive][:, alive]
    rows, cols = torch.triu_indices(len(live), len(live), offset=1)
    pairs = live[rows, cols]
    above = live > threshold
    above.fill_diagonal_(False)
    count = int(alive.sum())
    return Redundancy(
        channels=len(maps),
        dead=len(maps) - count,
        threshold=threshold,
        pair_similarities=pairs,
        share_pairs_above=float((pairs > threshold).float().mean()) if len(pairs) else 0.0,
        share_maps_with_ghost=float(above.any(dim=1).float().mean()) if count else 0.0,
    )


def most_similar_pairs(maps: torch.Tensor, count: int) -> list[tuple[int, int, float]]:
    """The ``count`` most similar pairs, each map in at most one pair (greedy)."""
    similarity, _ = similarity_matrix(maps)
    similarity = similarity.clone()
    similarity.fill_diagonal_(-2)
    order = torch.argsort(similarity.flatten(), descending=True)
    used: set[int] = set()
    pairs = []
    for flat in order.tolist():
        i, j = divmod(flat, len(maps))
        if len(pairs) == count or similarity[i, j] <= -2:
            break
        if i < j and i not in used and j not in used:
            pairs.append((i, j, float(similarity[i, j])))
            used.update((i, j))
    return pairs


@dataclass
class CheapFit:
    """The d x d filter and bias that best turn one map into another (least squares)."""

    kernel: torch.Tensor
    bias: float
    mse: float


def fit_cheap_operation(source: torch.Tensor, target: torch.Tensor, d: int) -> CheapFit:
    """Least-squares ``target ~ conv(source, kernel, padding=d // 2) + bias``, the paper's
    toy experiment (Table 1). Both maps are scaled by the target's standard deviation
    first, so the MSE compares across pairs and layers."""
    scale = target.std().clamp_min(1e-12)
    src, tgt = (source / scale).double(), (target / scale).double()
    patches = F.unfold(src[None, None], d, padding=d // 2)[0].T  # (H*W, d*d)
    design = torch.cat([patches, torch.ones(len(patches), 1, dtype=patches.dtype)], dim=1)
    solution = torch.linalg.lstsq(design, tgt.flatten()[:, None]).solution[:, 0]
    residual = design @ solution - tgt.flatten()
    return CheapFit(
        kernel=solution[:-1].reshape(d, d).float(),
        bias=float(solution[-1]),
        mse=float(residual.pow(2).mean()),
    )
