"""Training curves as PNG files, drawn headless."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from compress.runs import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def new_figure(**kwargs: Any) -> Figure:
    """A matplotlib figure outside pyplot's global state, which is not thread-safe: packed
    trials run in threads and draw their curves at the same time. matplotlib is imported
    here, where a figure is drawn: importing it took 0.8 s, which every ``compress``
    command paid at start-up."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def plot_curves(history: list[dict[str, float]], directory: Path, title: str) -> list[Path]:
    """``accuracy.png`` and ``loss.png``: train and val per epoch, like the seed's figures.

    Fixed margins, not ``tight_layout``: every run but a study's trials draws these, and
    measuring the layout draws each figure once more (0.38 -> 0.27 s a run on a CPU)."""
    epochs = [record["epoch"] for record in history]
    written = []
    for metric, label in (("acc", "accuracy"), ("loss", "loss")):
        figure = new_figure(figsize=(6, 4), dpi=100)
        axis = figure.subplots()
        figure.subplots_adjust(left=0.12, right=0.97, bottom=0.12, top=0.92)
        axis.plot(epochs, [r[f"train_{metric}"] for r in history], marker="o", label="train")
        axis.plot(epochs, [r[f"val_{metric}"] for r in history], marker="o", label="val")
        axis.set(xlabel="epoch", ylabel=label, title=f"{title}: {label}")
        axis.grid(alpha=0.3)
        axis.legend()
        path = directory / f"{label}.png"
        atomic_write(path, lambda tmp, fig=figure: fig.savefig(tmp, format="png"))
        written.append(path)
    return written


def plot_compare(runs: list[tuple[str, list[dict[str, float]]]], path: Path) -> None:
    """Every run's train (dashed) and val (solid) loss and accuracy, overlaid, with one
    legend entry a run beside them."""
    figure = new_figure(figsize=(11, 4), dpi=100)
    axes = figure.subplots(1, 2)
    for index, (label, history) in enumerate(runs):
        color = f"C{index}"
        epochs = [record["epoch"] for record in history]
        for axis, metric in zip(axes, ("loss", "acc"), strict=True):
            train = [r[f"train_{metric}"] for r in history]
            axis.plot(epochs, train, "--", color=color, label=f"{label} train")
            axis.plot(
                epochs,
                [r[f"val_{metric}"] for r in history],
                "-o",
                color=color,
                markersize=3,
                label=f"{label} val",
            )
    from matplotlib.ticker import MaxNLocator

    for axis, name in zip(axes, ("loss", "accuracy"), strict=True):
        axis.set(xlabel="epoch", ylabel=name, title=name)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
        axis.grid(alpha=0.3)
    # One legend beside the plots, one entry a run (dashed: train, solid: val).
    handles = [axes[0].lines[2 * i] for i in range(len(runs))]
    figure.legend(handles, [label for label, _ in runs], loc="center right", fontsize=7)
    figure.tight_layout(rect=(0, 0, 0.8 if runs else 1, 1))
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))


PAIR_COLORS = ("red", "lime", "deepskyblue", "orange", "magenta", "yellow", "cyan", "white")


def plot_feature_maps(
    maps: torch.Tensor,
    pairs: list[tuple[int, int, float]],
    similarities: torch.Tensor,
    path: Path,
    title: str,
    columns: int = 8,
) -> None:
    """A grid of feature maps, each similar pair boxed in its own colour (the paper's
    Figure 1), above the histogram of pairwise cosine similarity."""
    from matplotlib.gridspec import GridSpec

    rows = -(-len(maps) // columns)
    figure = new_figure(figsize=(columns * 1.1, rows * 1.1 + 2.4), dpi=100)
    grid = GridSpec(rows + 2, columns, figure=figure)
    boxed = {c: PAIR_COLORS[k % len(PAIR_COLORS)] for k, p in enumerate(pairs) for c in p[:2]}
    for index, image in enumerate(maps):
        axis = figure.add_subplot(grid[index // columns, index % columns])
        axis.imshow(image.numpy(), cmap="gray")
        axis.set_xticks([])
        axis.set_yticks([])
        color = boxed.get(index)
        for spine in axis.spines.values():
            spine.set(edgecolor=color or "none", linewidth=3 if color else 0)
    axis = figure.add_subplot(grid[rows:, :])
    axis.hist(similarities.numpy(), bins=40, range=(-1, 1), color="grey")
    axis.set(xlabel="cosine similarity of a pair of maps", ylabel="pairs")
    figure.suptitle(title)
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))
