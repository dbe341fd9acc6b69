"""Your own images: a folder of class folders, decoded once into the in-memory path
(or, too large for memory, streamed).

``--dataset folder --data-dir DIR`` reads the usual layout: ``DIR/train/<class>/*`` with
``DIR/val/<class>/*`` (or ``test``), or one ``DIR/<class>/*`` that a fixed-seed,
per-class split divides (``--val-fraction``). Classes are the folder names, sorted, and
are recorded with the run. Each image (JPEG, PNG, WebP, any size) is decoded with PIL,
its shorter side resized to ``--image-size`` and the centre square kept, so the whole set
is one uint8 tensor, as CIFAR-10 is here. An image PIL cannot read (truncated, not an
image) is skipped and counted, not fatal: a photo collection with one bad file is still
a data set, and the count is printed and recorded.

A set larger than ``--memory-budget-mb`` decoded is streamed instead
(``compress.streaming``): its files are listed, each header read (a file that is not an
image is skipped and counted), and images are decoded batch by batch while training. A
file whose header reads but whose pixels do not (truncated) is only found when decoded
(first by the channel statistics' sample, before the run starts), and ends the run
naming it: finding every one up front would mean decoding the whole folder once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from compress.errors import UsageError
from compress.streaming import ImageFiles, decode

EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
SPLITS = (("train", "val"), ("train", "test"))
SPLIT_SEED = 0


@dataclass
class FolderImages:
    """A folder data set, decoded (or listed, to stream): both splits, the class names,
    what was skipped."""

    train_x: torch.Tensor | ImageFiles
    train_y: torch.Tensor
    test_x: torch.Tensor | ImageFiles
    test_y: torch.Tensor
    classes: tuple[str, ...]
    skipped: list[str]


def _class_files(directory: Path) -> dict[str, list[Path]]:
    """Each class folder under ``directory`` with its image files, in a fixed order."""
    classes = sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = {
        c.name: sorted(f for f in c.rglob("*") if f.suffix.lower() in EXTENSIONS) for c in classes
    }
    empty = [name for name, found in files.items() if not found]
    if empty:
        raise UsageError(
            f"class folder {directory / empty[0]} holds no image ({', '.join(EXTENSIONS)})"
        )
    return files


def _layout(root: Path, val_fraction: float) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """(train, held-out) files per class: the folder's own split, or a per-class split."""
    for train_name, held_name in SPLITS:
        train_dir, held_dir = root / train_name, root / held_name
        if train_dir.is_dir() or held_dir.is_dir():
            if not (train_dir.is_dir() and held_dir.is_dir()):
                missing = held_dir if train_dir.is_dir() else train_dir
                raise UsageError(f"{root} has a split but no {missing.name}/ folder")
            train, held = _class_files(train_dir), _class_files(held_dir)
            if set(train) != set(held):
                odd = sorted(set(train) ^ set(held))[0]
                raise UsageError(f"class {odd!r} is in only one of {train_dir} and {held_dir}")
            return train, held
    files = _class_files(root)
    if not files:
        raise UsageError(f"{root} holds no class folders (DIR/<class>/image, or train/ and val/)")
    rng = random.Random(SPLIT_SEED)
    train, held = {}, {}
    for name, found in files.items():
        shuffled = found[:]
        rng.shuffle(shuffled)
        count = round(len(shuffled) * val_fraction)
        if len(shuffled) > 1:
            count = min(max(count, 1), len(shuffled) - 1)  # each split sees every class
        held[name], train[name] = shuffled[:count], shuffled[count:]
    return train, held


def decoded_mb(images: int, size: int) -> float:
    """What ``images`` RGB images take decoded at ``size`` x ``size``, in MB."""
    return images * 3 * size * size / 2**20


def _decode(path: Path, size: int) -> np.ndarray | None:
    """One image as uint8 (size, size, 3): shorter side resized, centre square; None if
    PIL cannot read it."""
    from PIL import Image

    try:
        image = decode(str(path))
    except UsageError:
        return None
    scale = size / min(image.size)
    width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    image = image.resize((width, height), Image.BILINEAR)
    left, top = (width - size) // 2, (height - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


def _has_image_header(path: Path) -> bool:
    """Whether PIL recognises the file as an image (its header only: no pixels decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path):
            return True
    except (OSError, UnidentifiedImageError, ValueError):
        return False


def _listed(
    root: Path, files: dict[str, list[Path]], classes: tuple[str, ...], size: int, split: str,
    skipped: list[str],
) -> tuple[ImageFiles, torch.Tensor]:  # fmt: skip
    """One split's files to stream, those without an image header left out."""
    paths, labels = [], []
    for label, name in enumerate(classes):
        for path in files[name]:
            if _has_image_header(path):
                paths.append(str(path))
                labels.append(label)
            else:
                skipped.append(str(path))
    if not paths:
        raise UsageError(f"no readable image in the {split} split of {root}")
    return ImageFiles(tuple(paths), size), torch.tensor(labels, dtype=torch.int64)


def read_folder(root: Path, size: int, val_fraction: float, budget_mb: float) -> FolderImages:
    """The folder's images, decoded and checked, or listed to stream when decoded they
    would take more than ``budget_mb``; UsageError for what cannot be a data set."""
    if not root.is_dir():
        raise UsageError(f"--data-dir {root} is not a directory")
    train_files, held_files = _layout(root, val_fraction)
    classes = tuple(sorted(train_files))
    count = sum(map(len, train_files.values())) + sum(map(len, held_files.values()))
    skipped: list[str] = []
    if decoded_mb(count, size) > budget_mb:
        train = _listed(root, train_files, classes, size, "training", skipped)
        held = _listed(root, held_files, classes, size, "held-out", skipped)
        return FolderImages(*train, *held, classes, skipped)

    def decoded(files: dict[str, list[Path]], split: str) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for label, name in enumerate(classes):
            for path in files[name]:
                pixels = _decode(path, size)
                if pixels is None:
                    skipped.append(str(path))
                    continue
                images.append(pixels)
                labels.append(label)
        if not images:
            raise UsageError(f"no readable image in the {split} split of {root}")
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        return x, torch.tensor(labels, dtype=torch.int64)

    train_x, train_y = decoded(train_files, "training")
    test_x, test_y = decoded(held_files, "held-out")
    return FolderImages(train_x, train_y, test_x, test_y, classes, skipped)
