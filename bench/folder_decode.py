"""Decoding a streamed folder's images: PIL (what ``compress.streaming`` uses) against
torchvision.io, same files, same process, one thread, interleaved rounds.

Each path decodes a JPEG and applies the training transform (random resized crop to
``--size`` and flip) or the evaluation one (resize to size / 0.875, centre crop), ending
in a uint8 tensor. The files are crops of scikit-learn's bundled photo (``china.jpg``)
at ``--width`` x 3/4 of it, saved at JPEG quality 90, so the run needs no download.

    python bench/folder_decode.py --images 200 --size 224
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.table import Table
from sklearn.datasets import load_sample_image
from torchvision.transforms import v2

from compress.streaming import CROP_FRACTION, ImageFiles, decode, transform


def make_jpegs(directory: Path, count: int, width: int) -> list[str]:
    photo = Image.fromarray(load_sample_image("china.jpg"))
    height = width * 3 // 4
    if photo.width < width or photo.height < height:
        photo = photo.resize((max(width, photo.width), max(height, photo.height)))
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        left = int(rng.integers(0, photo.width - width + 1))
        top = int(rng.integers(0, photo.height - height + 1))
        path = directory / f"{index}.jpg"
        photo.crop((left, top, left + width, top + height)).save(path, quality=90)
        paths.append(str(path))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--width", type=int, default=500, help="width of each JPEG")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # torchvision.io's
    from torchvision.io import ImageReadMode, decode_image, read_file

    size = args.size
    tensor_steps = {
        "train": v2.Compose(
            [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()]
        ),
        "eval": v2.Compose(
            [v2.Resize(round(size / CROP_FRACTION), antialias=True), v2.CenterCrop(size)]
        ),
    }
    with tempfile.TemporaryDirectory() as directory:
        paths = make_jpegs(Path(directory), args.images, args.width)
        files = ImageFiles(tuple(paths), size)
        paths_by = {
            "PIL (compress)": lambda path, kind: transform(files, kind == "train", True)(
                decode(path)
            ),
            "torchvision.io": lambda path, kind: tensor_steps[kind](
                decode_image(read_file(path), mode=ImageReadMode.RGB)
            ),
        }
        seconds = {(name, kind): 0.0 for name in paths_by for kind in tensor_steps}
        for _ in range(args.rounds):
            for kind in tensor_steps:
                for name, load in paths_by.items():
                    start = time.perf_counter()
                    for path in paths:
                        image = load(path, kind)
                    seconds[name, kind] += time.perf_counter() - start
                    assert image.shape == (3, size, size) and image.dtype == torch.uint8
    table = Table(title=f"{args.images} JPEGs of {args.width}px, to {size}px, 1 thread")
    for column in ("decoder", "transform", "images/s", "vs PIL"):
        table.add_column(column)
    for kind in tensor_steps:
        base = seconds["PIL (compress)", kind]
        for name in paths_by:
            rate = args.images * args.rounds / seconds[name, kind]
            table.add_row(name, kind, f"{rate:,.0f}", f"{base / seconds[name, kind]:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
