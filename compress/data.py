"""Data sets as whole uint8 tensors, and a loader that augments batches on the device.

The training split lives on the training device as one ``(N, C, H, W)`` uint8 tensor;
each epoch draws a fresh permutation and every augmentation (random crop with padding,
horizontal flip, optional cutout) is done on whole batches there. No per-image PIL work.
An image folder too large for memory is the exception: its splits are lists of files
(``ImageFiles``), decoded in ``DataLoader`` workers (``compress.streaming``); ``loader``
gives whichever a split needs.
"""

from __future__ import annotations

import dataclasses
import math
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from compress import distributed
from compress.errors import UsageError, first_line
from compress.options import Options, option
from compress.streaming import ImageFiles, StreamLoader, count_batches, decode, transform

DATASETS = ("digits", "cifar10", "cifar100", "synthetic", "folder")
DATASET_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100, "synthetic": 4}
# Channel means and standard deviations of the training splits, in [0, 1] units.
NORMALIZATION = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
# Named normalisations a network may have been trained with, besides its data's own.
NAMED_NORMALIZATION = {"imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}
NORMALIZE_HELP = (
    "input normalisation the network was trained with: dataset (the data's own channel "
    "statistics), imagenet, timm:NAME (that pretrained model's), or "
    "MEAN,MEAN,MEAN/STD,STD,STD in [0, 1] units"
)


def timm_preprocessing(text: str) -> Any:
    """``timm:NAME``'s pretrained configuration (mean, std, crop_pct, interpolation)."""
    import timm

    try:
        config = timm.get_pretrained_cfg(text.removeprefix("timm:"))
    except RuntimeError:
        config = None
    if config is None:
        raise UsageError(f"--normalize {text}: timm knows no pretrained model by that name")
    return config


def parse_normalization(text: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``--normalize``'s value as (mean, std); None for ``dataset``."""
    if text == "dataset":
        return None
    if text in NAMED_NORMALIZATION:
        return NAMED_NORMALIZATION[text]
    if text.startswith("timm:"):  # the preprocessing timm's pretrained weights expect
        config = timm_preprocessing(text)
        return tuple(config.mean), tuple(config.std)
    try:
        mean, std = (tuple(float(v) for v in part.split(",")) for part in text.split("/"))
    except ValueError:
        mean = std = ()
    if len(mean) != 3 or len(std) != 3:
        raise UsageError(
            f"--normalize takes dataset, {', '.join(NAMED_NORMALIZATION)} or three means and "
            f"three stds as MEAN,MEAN,MEAN/STD,STD,STD, got {text!r}"
        )
    if not all(math.isfinite(v) for v in mean + std) or min(std) <= 0:
        raise UsageError(f"--normalize needs finite means and positive stds, got {text!r}")
    return mean, std


@dataclass
class DataConfig(Options):
    """Which data a run trains and tests on."""

    dataset: str = option(
        "digits",
        "data set (digits is bundled; cifar* download; folder: your images in --data-dir)",
        choices=DATASETS,
    )
    data_dir: str | None = option(
        None, "torchvision root, a directory of .npz shards, or (folder) of class folders"
    )
    train_size: int | None = option(None, "use only the first N training images", low=1)
    test_size: int | None = option(None, "use only the first N test images", low=1)
    normalize: str = option("dataset", NORMALIZE_HELP)
    image_size: int = option(32, "folder: side the images are decoded to (centre square)", low=8)
    val_fraction: float = option(
        0.2, "folder: images held out per class when DIR has no train/val split", low=0,
        high=1, low_open=True, high_open=True,
    )  # fmt: skip
    memory_budget_mb: float = option(
        2048,
        "folder: the most the decoded images may take in memory (MB); a larger folder is "
        "streamed from disk (0: always)",
        low=0,
    )

    def check(self) -> None:
        parse_normalization(self.normalize)
        if self.dataset == "folder" and not self.data_dir:
            raise UsageError("--dataset folder reads your images: give --data-dir DIR")


@dataclass
class Dataset:
    """A train and a test split as uint8 ``(N, 3, H, W)`` tensors (or, streamed, their
    files) with int64 labels."""

    name: str
    train_x: torch.Tensor | ImageFiles
    train_y: torch.Tensor
    test_x: torch.Tensor | ImageFiles
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    mirror_invariant: bool = True  # may augmentation flip images left-right?
    classes: tuple[str, ...] | None = None  # names, where the data names them (folders)
    skipped: int = 0  # unreadable images left out (folders)

    @property
    def image_size(self) -> int:
        return self.train_x.shape[-1]


def _from_hwc(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), torch.from_numpy(
        y.astype(np.int64)
    )


STATS_SAMPLE = 512  # streamed images decoded to estimate a folder's channel statistics


def sample(images: torch.Tensor | ImageFiles) -> torch.Tensor:
    """A split as uint8, or, streamed, up to ``STATS_SAMPLE`` of its images spread over
    it, decoded and centre-cropped as evaluation does."""
    if isinstance(images, torch.Tensor):
        return images
    chosen = torch.linspace(0, len(images) - 1, min(STATS_SAMPLE, len(images))).long()
    centre = transform(images, train=False, flip=False)
    return torch.stack([centre(decode(images.paths[i])) for i in chosen.unique().tolist()])


def _stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    pixels = x.float().div(255).transpose(0, 1).reshape(x.shape[1], -1)
    return tuple(pixels.mean(1).tolist()), tuple(pixels.std(1).clamp_min(1e-3).tolist())


def default_data_dir() -> Path:
    """``$COMPRESS_DATA``, else the user's cache directory."""
    if os.environ.get("COMPRESS_DATA"):
        return Path(os.environ["COMPRESS_DATA"])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "compress"


def load_digits() -> Dataset:
    """scikit-learn's bundled 8x8 digits, upscaled to 32x32 RGB; a fixed stratified split."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_digits()
    images = torch.from_numpy(digits.images).float().unsqueeze(1) / 16
    images = F.interpolate(images, size=32, mode="bilinear", align_corners=False)
    images = images.clamp(0, 1).mul(255).round().to(torch.uint8).expand(-1, 3, -1, -1)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=0.2, random_state=0, stratify=digits.target
    )
    train_x = images[train_idx].contiguous()
    mean, std = _stats(train_x)
    return Dataset(
        "digits",
        train_x,
        labels[train_idx],
        images[test_idx].contiguous(),
        labels[test_idx],
        10,
        mean,
        std,
        mirror_invariant=False,
    )


def make_synthetic(
    train_size: int = 512, test_size: int = 128, num_classes: int = 4, seed: int = 0
) -> Dataset:
    """Learnable random data for tests: one noisy colour pattern per class."""
    generator = torch.Generator().manual_seed(seed)
    prototypes = torch.rand(num_classes, 3, 8, 8, generator=generator)
    prototypes = F.interpolate(prototypes, size=32, mode="nearest")

    def draw(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, num_classes, (count,), generator=generator)
        noise = torch.randn(count, 3, 32, 32, generator=generator) * 0.15
        images = (prototypes[labels] + noise).clamp(0, 1).mul(255).round().to(torch.uint8)
        return images, labels

    train_x, train_y = draw(train_size)
    test_x, test_y = draw(test_size)
    mean, std = _stats(train_x)
    return Dataset("synthetic", train_x, train_y, test_x, test_y, num_classes, mean, std)


def read_shard(file: Path) -> tuple[np.ndarray, np.ndarray]:
    """One ``.npz`` shard's images and labels, checked: a UsageError names the file and
    what is wrong with it."""
    try:
        with np.load(file, allow_pickle=False) as shard:
            x, y = shard["x"], shard["y"]
    except KeyError as error:
        raise UsageError(f"shard {file} has no array {error} (it needs x and y)") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise UsageError(f"cannot read shard {file}: {error or type(error).__name__}") from None
    except MemoryError:  # a header that claims more images than memory holds
        raise UsageError(
            f"cannot read shard {file}: it claims more data than memory holds"
        ) from None
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[3] != 3:
        raise UsageError(
            f"shard {file}: x must be uint8 images (N, H, W, 3), got {x.dtype} {x.shape}"
        )
    if x.shape[1] != x.shape[2]:
        raise UsageError(f"shard {file}: images must be square, got {x.shape[1]}x{x.shape[2]}")
    if len(x) == 0:
        raise UsageError(f"shard {file} holds no images")
    if y.ndim != 1 or len(y) != len(x):
        raise UsageError(f"shard {file}: y must hold one label per image, shape ({len(x)},)")
    if not np.issubdtype(y.dtype, np.integer):
        raise UsageError(f"shard {file}: labels must be integers, got {y.dtype}")
    if int(y.min()) < 0:
        raise UsageError(f"shard {file}: labels must be >= 0, found {int(y.min())}")
    return x, y


def _load_shards(directory: Path) -> tuple[torch.Tensor, ...] | None:
    """Train/test tensors from ``*train*.npz`` and ``*test*.npz`` shards, if any are there;
    every shard is checked, the test split as carefully as the train split."""
    train = sorted(directory.glob("*train*.npz"))
    test = sorted(directory.glob("*test*.npz"))
    if not train and not test:
        return None
    if not train or not test:
        missing = "*train*.npz" if not train else "*test*.npz"
        raise UsageError(f"{directory} holds .npz shards but none named {missing}")
    shards = {file: read_shard(file) for file in [*train, *test]}
    sizes = {file: x.shape[1] for file, (x, _) in shards.items()}
    if len(set(sizes.values())) > 1:
        first, *_ = sizes
        other = next(f for f, size in sizes.items() if size != sizes[first])
        raise UsageError(
            f"shard {other} holds {sizes[other]}px images, {first} {sizes[first]}px: "
            "every shard needs the same size"
        )

    def joined(files: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
        x = np.concatenate([shards[file][0] for file in files])
        return _from_hwc(x, np.concatenate([shards[file][1] for file in files]))

    return (*joined(train), *joined(test))


def _load_torchvision_cifar(name: str, root: Path, download: bool) -> tuple[torch.Tensor, ...]:
    """CIFAR through torchvision, decoded once into ``root/NAME-uint8.npz``."""
    cache = root / f"{name}-uint8.npz"
    if cache.exists():
        try:
            with np.load(cache) as arrays:
                return (
                    *_from_hwc(arrays["train_x"], arrays["train_y"]),
                    *_from_hwc(arrays["test_x"], arrays["test_y"]),
                )
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, MemoryError) as error:
            reason = first_line(error)
            raise UsageError(f"corrupted data cache {cache} ({reason}); delete it") from None
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    try:
        train = cls(root, train=True, download=download)
        test = cls(root, train=False, download=download)
    except RuntimeError as error:  # torchvision says "Dataset not found or corrupted"
        raise UsageError(
            f"{name} is not in {root} and could not be downloaded ({error}); pass "
            f"--data-dir with the data or a directory of .npz shards, or use --dataset digits"
        ) from None
    except OSError as error:  # no network
        raise UsageError(
            f"{name} could not be downloaded ({error}); pass --data-dir with .npz shards "
            f"or use --dataset digits, which is bundled"
        ) from None
    arrays = {
        "train_x": train.data,
        "train_y": np.asarray(train.targets, dtype=np.uint8),
        "test_x": test.data,
        "test_y": np.asarray(test.targets, dtype=np.uint8),
    }
    partial = cache.with_suffix(".partial.npz")
    np.savez(partial, **arrays)
    partial.replace(cache)
    return (
        *_from_hwc(arrays["train_x"], arrays["train_y"]),
        *_from_hwc(arrays["test_x"], arrays["test_y"]),
    )


def load_dataset(name: str, data_dir: str | Path | None = None, download: bool = True) -> Dataset:
    """Load a data set by name; ``data_dir`` may hold torchvision's files or ``.npz`` shards."""
    if name == "digits":
        return load_digits()
    if name == "synthetic":
        return make_synthetic()
    if name not in ("cifar10", "cifar100"):
        raise UsageError(f"unknown dataset {name!r} (choose from {', '.join(DATASETS)})")
    root = Path(data_dir) if data_dir else default_data_dir()
    if root.exists() and not root.is_dir():
        raise UsageError(f"data directory {root} is a file, not a directory")
    if data_dir and not root.is_dir():
        raise UsageError(f"data directory {root} does not exist")
    tensors = _load_shards(root) if root.is_dir() else None
    if tensors is None:
        root.mkdir(parents=True, exist_ok=True)
        tensors = _load_torchvision_cifar(name, root, download)
    train_x, train_y, test_x, test_y = tensors
    classes = DATASET_CLASSES[name]
    for split, labels in (("training", train_y), ("test", test_y)):
        if int(labels.max()) >= classes:
            raise UsageError(
                f"{split} labels in {root} go up to {int(labels.max())}; {name} has "
                f"{classes} classes (0 to {classes - 1})"
            )
    mean, std = NORMALIZATION[name]
    return Dataset(name, train_x, train_y, test_x, test_y, classes, mean, std)


def load_folder(config: DataConfig) -> Dataset:
    """Your images (``compress.folders``), with their own channel statistics."""
    from compress.folders import read_folder

    images = read_folder(
        Path(config.data_dir), config.image_size, config.val_fraction, config.memory_budget_mb
    )
    if isinstance(images.train_x, ImageFiles) and config.normalize.startswith("timm:"):
        pretrained = timm_preprocessing(config.normalize)  # its evaluation crop, too
        evaluation = {
            "crop_fraction": pretrained.crop_pct,
            "interpolation": pretrained.interpolation,
        }
        images.train_x = dataclasses.replace(images.train_x, **evaluation)
        images.test_x = dataclasses.replace(images.test_x, **evaluation)
    mean, std = _stats(sample(images.train_x))
    return Dataset(
        "folder",
        images.train_x,
        images.train_y,
        images.test_x,
        images.test_y,
        len(images.classes),
        mean,
        std,
        classes=images.classes,
        skipped=len(images.skipped),
    )


def load_data(config: DataConfig) -> Dataset:
    """The data set a config names, cut to its subset sizes."""
    if config.dataset == "folder":
        data = load_folder(config)
    else:
        data = load_dataset(config.dataset, config.data_dir)
    if config.train_size or config.test_size:
        data = subset(data, config.train_size, config.test_size)
    chosen = parse_normalization(config.normalize)
    if chosen is not None:
        data = dataclasses.replace(data, mean=chosen[0], std=chosen[1])
    return data


def subset(data: Dataset, train_size: int | None, test_size: int | None = None) -> Dataset:
    """The first ``train_size`` / ``test_size`` images, for quick runs."""
    return dataclasses.replace(
        data,
        train_x=data.train_x[:train_size],
        train_y=data.train_y[:train_size],
        test_x=data.test_x[:test_size],
        test_y=data.test_y[:test_size],
    )


def loader(
    images: torch.Tensor | ImageFiles,
    labels: torch.Tensor,
    batch_size: int,
    device: torch.device,
    train: bool,
    generator: torch.Generator | None = None,
    shared: bool = False,
    **augmentation: Any,
) -> DeviceLoader | StreamLoader:
    """Batches of one split: from memory, augmented on the device (``augmentation``:
    ``DeviceLoader``'s crop padding, flip and cutout), or streamed from its files (which
    crop, resize and flip as ImageNet training does: no padding crop). ``shared``: in a
    run over several processes, each gets its share of every batch."""
    if isinstance(images, ImageFiles):
        if augmentation.get("cutout") and train:
            raise UsageError("--cutout works on data held in memory, not a streamed folder")
        flip = augmentation.get("flip", True)
        return StreamLoader(images, labels, batch_size, device, train, generator, flip, shared)
    return DeviceLoader(
        images, labels, batch_size, device, train, generator, shared=shared, **augmentation
    )


class DeviceLoader:
    """Batches of one split, held on ``device``, augmented there.

    Training batches all have ``batch_size`` images (the last partial batch is dropped)
    so shapes stay fixed for cuDNN autotuning and graph capture. ``shared``: over several
    processes, every one draws and augments the whole batch and keeps its share
    (``compress.distributed``), so the images and their crops are those of one process.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        device: torch.device,
        train: bool,
        generator: torch.Generator | None = None,
        crop_padding: int = 4,
        flip: bool = True,
        cutout: int = 0,
        shared: bool = False,
    ) -> None:
        self.batches = count_batches(len(images), batch_size, train)
        self.images = images.to(device, non_blocking=True)
        self.labels = labels.to(device, non_blocking=True)
        self.batch_size = batch_size
        self.device = device
        self.train = train
        self.generator = generator
        self.crop_padding = crop_padding if train else 0
        self.flip = flip and train
        self.cutout = cutout if train else 0
        self.shared = shared
        self.device_generator: torch.Generator | None = None

    def __len__(self) -> int:
        return self.batches

    def _random(self, *shape: int, high: int) -> torch.Tensor:
        if self.device_generator is not None:
            return torch.randint(
                0, high, shape, generator=self.device_generator, device=self.device
            )
        return torch.randint(0, high, shape, generator=self.generator).to(self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        count = len(self.images)
        if self.train:
            order = torch.randperm(count, generator=self.generator).to(self.device)
            if self.device.type == "cuda":  # a host-to-device copy per batch would stall the GPU
                seed = int(torch.randint(2**62, (1,), generator=self.generator))
                self.device_generator = torch.Generator(self.device).manual_seed(seed)
        else:
            order = torch.arange(count, device=self.device)
        for batch in range(len(self)):
            index = order[batch * self.batch_size : (batch + 1) * self.batch_size]
            images = self.images[index]
            if self.train:
                images = self.augment(images)
            if self.shared:
                yield distributed.share(images), distributed.share(self.labels[index])
            else:
                yield images, self.labels[index]

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """Random crop from a zero-padded image, horizontal flip and cutout, batched."""
        batch, channels, height, width = images.shape
        if self.crop_padding:
            pad = self.crop_padding
            padded = F.pad(images, (pad, pad, pad, pad))
            dy = self._random(batch, 1, high=2 * pad + 1)
            dx = self._random(batch, 1, high=2 * pad + 1)
            rows = (torch.arange(height, device=self.device) + dy)[:, None, :, None]
            cols = (torch.arange(width, device=self.device) + dx)[:, None, None, :]
            samples = torch.arange(batch, device=self.device)[:, None, None, None]
            planes = torch.arange(channels, device=self.device)[None, :, None, None]
            images = padded[samples, planes, rows, cols]
        if self.flip:
            flip = self._random(batch, 1, 1, 1, high=2).bool()
            images = torch.where(flip, images.flip(3), images)
        if self.cutout:
            cy = self._random(batch, 1, 1, high=height)
            cx = self._random(batch, 1, 1, high=width)
            ys = torch.arange(height, device=self.device)[None, :, None]
            xs = torch.arange(width, device=self.device)[None, None, :]
            half = self.cutout // 2
            hole = ((ys - cy).abs() <= half) & ((xs - cx).abs() <= half)
            images = images.masked_fill(hole[:, None], 0)
        return images


def normalization(data: Dataset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The data set's channel mean and std as ``(1, 3, 1, 1)`` tensors on ``device``."""
    mean = torch.tensor(data.mean, device=device).view(1, 3, 1, 1)
    return mean, torch.tensor(data.std, device=device).view(1, 3, 1, 1)


def prepare(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 batch -> normalised float, resized to ``size`` on the device if needed."""
    x = images.float().div_(255).sub_(mean).div_(std)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x


def load_image(path: str | None, size: int) -> torch.Tensor:
    """One RGB image as uint8 ``(1, 3, size, size)``, centre-cropped to a square and resized.

    Without ``path``: ``china.jpg`` (the Summer Palace, Beijing), the photo that
    scikit-learn ships in ``sklearn.datasets``, so the default needs no download.
    """
    from PIL import Image, UnidentifiedImageError

    if path is None:
        from sklearn.datasets import load_sample_image

        image = Image.fromarray(load_sample_image("china.jpg"))
    else:
        try:
            image = Image.open(path).convert("RGB")
        except (OSError, UnidentifiedImageError) as error:
            raise UsageError(f"cannot read image {path}: {error}") from None
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    square = image.crop((left, top, left + side, top + side)).resize((size, size))
    pixels = torch.from_numpy(np.asarray(square, dtype=np.uint8).copy())
    return pixels.permute(2, 0, 1)[None]
