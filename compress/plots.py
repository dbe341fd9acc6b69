"""Training curves as PNG files, drawn headless."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from compress.runs import atomic_write


def plot_curves(history: list[dict[str, float]], directory: Path, title: str) -> list[Path]:
    """``accuracy.png`` and ``loss.png``: train and val per epoch, like the seed's figures."""
    epochs = [record["epoch"] for record in history]
    written = []
    for metric, label in (("acc", "accuracy"), ("loss", "loss")):
        figure, axis = plt.subplots(figsize=(6, 4), dpi=100)
        axis.plot(epochs, [r[f"train_{metric}"] for r in history], marker="o", label="train")
        axis.plot(epochs, [r[f"val_{metric}"] for r in history], marker="o", label="val")
        axis.set(xlabel="epoch", ylabel=label, title=f"{title}: {label}")
        axis.grid(alpha=0.3)
        axis.legend()
        figure.tight_layout()
        path = directory / f"{label}.png"
        atomic_write(path, lambda tmp, fig=figure: fig.savefig(tmp, format="png"))
        plt.close(figure)
        written.append(path)
    return written
