"""``compress ghost maps|fit|theory``: the paper's evidence, measured on any network."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.table import Table

from compress.cli.common import add_options, command, options_of
from compress.data import load_data, load_image, prepare
from compress.errors import UsageError
from compress.loading import load_run
from compress.options import Options, option
from compress.plots import plot_feature_maps
from compress.ratios import conv_vs_ghost
from compress.redundancy import (
    default_layer,
    feature_maps,
    fit_cheap_operation,
    most_similar_pairs,
    redundancy,
)
from compress.registry import pretrained_model
from compress.reports import console
from compress.techniques.ghost import D_HELP, S_HELP
from ghost.module import check_ghost_options
from ghost.theory import approximate_ratio

MAPS_EXAMPLES = (
    "compress ghost maps                        # ResNet-50's layer1 (Figure 1), timm weights",
    "compress ghost maps --model <RUN_DIR> --layer layer1 --image <IMAGE>",
)
FIT_EXAMPLES = ("compress ghost fit --model <RUN_DIR> --pairs 5 --d 1,3,5,7",)
THEORY_EXAMPLES = ("compress ghost theory --c 64 --n 128 --k 3 --s 2 --d 3 --h 32 --w 32",)


@dataclass
class Subject(Options):
    """Which network and image the feature-map commands look into."""

    model: str = option(
        "resnet50",
        "a run directory of `compress run`, or a timm model with pretrained weights "
        "(resnet50 is the paper's Figure 1; needs the internet or a cached copy)",
    )
    layer: str | None = option(None, "module name (default: layer1, else the widest map)")
    image: str | None = option(None, "an image file (default: scikit-learn's china.jpg)")


@dataclass
class MapsOptions(Subject):
    threshold: float = option(0.9, "cosine similarity counted as a ghost", low=-1, high=1)
    pairs: int = option(6, "most similar pairs to box", low=1)
    max_maps: int = option(64, "maps drawn", low=1)
    out: str = option("runs/ghost", "where the PNG goes")


@dataclass
class FitOptions(Subject):
    pairs: int = option(5, "most similar pairs fitted", low=1)
    d: tuple[int, ...] = option((1, 3, 5, 7), f"{D_HELP}: the kernels fitted", low=1)

    def check(self) -> None:
        if not self.d:
            raise UsageError("--d names no kernel (e.g. 1,3,5,7)")
        try:
            for d in self.d:
                check_ghost_options(2, d)
        except ValueError as error:
            raise UsageError(str(error)) from None


@dataclass
class TheoryOptions(Options):
    c: int = option(64, "input channels", low=1)
    n: int = option(128, "output channels", low=1)
    k: int = option(3, "conv kernel", low=1)
    s: int = option(2, S_HELP, low=2)
    d: int = option(3, D_HELP, low=1)
    h: int = option(32, "input height", low=1)
    w: int = option(32, "input width", low=1)

    def check(self) -> None:
        try:
            check_ghost_options(self.s, self.d)
        except ValueError as error:
            raise UsageError(str(error)) from None


def load_subject(model: str, image: str | None) -> tuple[torch.nn.Module, torch.Tensor, str]:
    """The network ``ghost maps`` and ``ghost fit`` look into, and its normalised image."""
    path = Path(model)
    if path.is_dir():
        loaded = load_run(path)
        shape = loaded.input
        if shape["mean"] is None:  # a run recorded before its input was
            data = load_data(loaded.spec.data)
            shape = {**shape, "mean": data.mean, "std": data.std, "image_size": data.image_size}
        mean = torch.tensor(shape["mean"]).view(1, 3, 1, 1)
        std = torch.tensor(shape["std"]).view(1, 3, 1, 1)
        pixels = load_image(image, shape["image_size"])
        return loaded.model, prepare(pixels, mean, std, shape["input_size"]), path.name
    network = pretrained_model(model)
    config = network.pretrained_cfg
    mean = torch.tensor(config["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(config["std"]).view(1, 3, 1, 1)
    size = config["input_size"][-1]
    return network, prepare(load_image(image, size), mean, std, size), model


def subject_maps(subject: Subject) -> tuple[torch.Tensor, str, str]:
    """(C, H, W) maps of the chosen layer, the layer's name and the model's label."""
    model, image, label = load_subject(subject.model, subject.image)
    layer = subject.layer or default_layer(model, image)
    return feature_maps(model, layer, image), layer, label


def maps(args: argparse.Namespace) -> None:
    options: MapsOptions = options_of(MapsOptions, args)
    found_maps, layer, label = subject_maps(options)
    found = redundancy(found_maps, options.threshold)
    shown = found_maps[: options.max_maps]
    pairs = most_similar_pairs(shown, options.pairs)
    summary = Table(title=f"Feature-map redundancy of {label}, layer {layer}")
    summary.add_column("")
    summary.add_column("value", justify="right")
    summary.add_row("maps (dead: all zero)", f"{found.channels} ({found.dead})")
    summary.add_row("map size", f"{found_maps.shape[1]} x {found_maps.shape[2]}")
    summary.add_row(
        f"pairs with cosine > {options.threshold}", f"{100 * found.share_pairs_above:.2f}%"
    )
    summary.add_row("maps with such a ghost", f"{100 * found.share_maps_with_ghost:.2f}%")
    for i, j, similarity in pairs:
        summary.add_row(f"boxed pair: maps {i} and {j}", f"cosine {similarity:.3f}")
    console.print(summary)
    histogram = Table(title="Cosine similarity of every pair of live maps")
    for column in ("from", "to", "pairs"):
        histogram.add_column(column, justify="right")
    for low, high, count in found.histogram():
        histogram.add_row(f"{low:+.1f}", f"{high:+.1f}", f"{count:,}")
    console.print(histogram)
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"maps-{Path(label).name}-{layer.replace('.', '_')}.png"
    title = f"{label} {layer}: first {len(shown)} of {found.channels} maps, similar pairs boxed"
    plot_feature_maps(shown, pairs, found.pair_similarities, path, title)
    console.print(f"wrote {path}", highlight=False)


def fit(args: argparse.Namespace) -> None:
    options: FitOptions = options_of(FitOptions, args)
    found_maps, layer, label = subject_maps(options)
    pairs = most_similar_pairs(found_maps, options.pairs)
    table = Table(
        title=f"MSE of the best d x d depthwise filter from map i to map j "
        f"({label}, {layer}; maps scaled to unit std)"
    )
    for column in ("i", "j", "cosine", *(f"d = {d}" for d in options.d)):
        table.add_column(column, justify="right")
    errors: dict[int, list[float]] = {d: [] for d in options.d}
    for i, j, similarity in pairs:
        for d in options.d:
            errors[d].append(fit_cheap_operation(found_maps[i], found_maps[j], d).mse)
        table.add_row(
            str(i), str(j), f"{similarity:.3f}", *(f"{errors[d][-1]:.3e}" for d in options.d)
        )
    table.add_row("mean", "", "", *(f"{sum(e) / len(e):.3e}" for e in errors.values()))
    console.print(table)


def theory(args: argparse.Namespace) -> None:
    o: TheoryOptions = options_of(TheoryOptions, args)
    ratio = conv_vs_ghost(o.c, o.n, o.k, o.s, o.d, (o.h, o.w))
    table = Table(
        title=f"Conv {o.c}->{o.n}, {o.k}x{o.k} on {o.h}x{o.w} vs Ghost module s={o.s}, d={o.d}"
    )
    for column in ("", "Eq. 4 / 5", "measured"):
        table.add_column(column, justify="right")
    table.add_row("r_s: conv MACs / Ghost MACs", f"{ratio.theory:.4f}", f"{ratio.mac_ratio:.4f}")
    table.add_row(
        "r_c: conv weights / Ghost weights", f"{ratio.theory:.4f}", f"{ratio.param_ratio:.4f}"
    )
    table.add_row("s c / (s + c - 1) (d ~ k)", f"{approximate_ratio(o.c, o.s):.4f}", "")
    console.print(table)


def add_to(commands: argparse._SubParsersAction) -> None:
    parser = command(
        commands,
        "ghost",
        "the paper's evidence: redundant maps, cheap fits, Eq. 4/5",
        (*MAPS_EXAMPLES, *FIT_EXAMPLES, *THEORY_EXAMPLES),
    )
    ghosts = parser.add_subparsers(dest="ghost_command", required=True)
    for name, help, examples, handler, options in (
        ("maps", "one layer's feature maps, similar pairs boxed", MAPS_EXAMPLES, maps, MapsOptions),
        ("fit", "fit d x d depthwise filters between similar maps", FIT_EXAMPLES, fit, FitOptions),
        (
            "theory",
            "Eq. 4/5 beside a measured Ghost module",
            THEORY_EXAMPLES,
            theory,
            TheoryOptions,
        ),
    ):
        add_options(command(ghosts, name, help, examples, handler), options, name)
