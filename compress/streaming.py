"""Image folders too large for memory, streamed from disk.

A folder whose decoded images would exceed ``--memory-budget-mb`` is not decoded up
front: each split is a list of files (``ImageFiles``) that ``StreamLoader`` decodes in
``DataLoader`` worker processes, as torchvision and timm train ImageNet networks: for
training a random resized crop (scale 0.08-1) and a flip at the run's image size, for
evaluation a resize to size / 0.875 and the centre crop (with ``--normalize timm:NAME``,
that pretrained model's crop share and resampling). Decoding is PIL's, as in
torchvision's ``ImageFolder``: torchvision.io decodes JPEGs 1.6-2x faster here
(``bench/folder_decode.py``), but torchvision 0.29 deprecates it for TorchCodec, which is
not a dependency; the workers hide the difference unless decoding is the bottleneck.
Batches come out as uint8 on the device, as ``DeviceLoader``'s do, so the engine
normalises and trains them the same way.

Each image's random crop and flip are drawn from a seed made of the epoch's seed (from the
run's generator) and the image's index, so a run is the same with any number of workers,
and a resumed run draws what the uninterrupted one drew.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader

from compress import distributed
from compress.errors import UsageError

CROP_FRACTION = 0.875  # evaluation: the centre 87.5% of the resized image, as timm's default
DEFAULT_WORKERS = min(8, os.cpu_count() or 1)


@dataclass(frozen=True)
class ImageFiles:
    """One split of a streamed folder: its image files, decoded only when a batch is
    loaded, at ``size`` x ``size``. Sliced and indexed like a split's uint8 tensor."""

    paths: tuple[str, ...]
    size: int
    workers: int = DEFAULT_WORKERS
    crop_fraction: float = CROP_FRACTION  # evaluation: the centre crop's share of the resize
    interpolation: str = "bilinear"  # PIL's resampling, by torchvision's name

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """The shape the split would have decoded."""
        return (len(self.paths), 3, self.size, self.size)

    def __getitem__(self, index: slice | torch.Tensor | Sequence[int]) -> ImageFiles:
        chosen = range(len(self.paths))[index] if isinstance(index, slice) else index
        if isinstance(chosen, torch.Tensor):
            chosen = chosen.tolist()
        return dataclasses.replace(self, paths=tuple(self.paths[i] for i in chosen))


def count_batches(images: int, batch_size: int, train: bool) -> int:
    """Batches in one pass over ``images``: training drops the last partial batch (fixed
    shapes), and refuses a batch larger than the split; evaluation keeps every image."""
    if train and batch_size > images:
        raise UsageError(f"batch size {batch_size} is larger than the {images} training images")
    return images // batch_size if train else -(-images // batch_size)


def decode(path: str) -> Image.Image:
    """One image file, decoded to RGB; UsageError naming it if it cannot be."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise UsageError(f"cannot decode image {path}: {error}") from None


def transform(files: ImageFiles, train: bool, flip: bool) -> Callable[[Image.Image], torch.Tensor]:
    """ImageNet-style preprocessing of a PIL image to uint8 ``(3, size, size)``."""
    from torchvision.transforms import v2  # slow to import: only where folders stream

    size = files.size
    resampling = v2.InterpolationMode(files.interpolation)
    if train:
        steps = [v2.RandomResizedCrop(size, interpolation=resampling)]
        steps += [v2.RandomHorizontalFlip()] if flip else []
    else:
        resized = round(size / files.crop_fraction)
        steps = [v2.Resize(resized, interpolation=resampling), v2.CenterCrop(size)]
    return v2.Compose([*steps, v2.PILToTensor()])


class _Decoded(torch.utils.data.Dataset):
    """The files of one split, decoded and transformed one by one (in a worker)."""

    def __init__(
        self,
        files: ImageFiles,
        labels: torch.Tensor,
        preprocess: Callable[[Image.Image], torch.Tensor],
        seed: int,
    ) -> None:
        self.files, self.labels, self.preprocess, self.seed = files, labels, preprocess, seed

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = decode(self.files.paths[index])
        with torch.random.fork_rng(devices=[]):  # the image's own draw, whoever decodes it
            torch.default_generator.manual_seed(self.seed * 1_000_003 + index)  # CPU only
            return self.preprocess(image), self.labels[index]


class StreamLoader:
    """``DeviceLoader``'s interface over ``ImageFiles``: batches of uint8 images on
    ``device``, shuffled and augmented for training (the last partial batch dropped),
    in order and centre-cropped for evaluation."""

    def __init__(
        self,
        files: ImageFiles,
        labels: torch.Tensor,
        batch_size: int,
        device: torch.device,
        train: bool,
        generator: torch.Generator | None = None,
        flip: bool = True,
        shared: bool = False,
    ) -> None:
        self.batches = count_batches(len(files), batch_size, train)
        self.files, self.labels, self.batch_size = files, labels.cpu(), batch_size
        self.device, self.train, self.generator = device, train, generator
        self.preprocess = transform(files, train, flip)
        self.shared = shared

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        seed = int(torch.randint(2**31, (1,), generator=self.generator)) if self.train else 0
        count = len(self.files)
        order = (
            torch.randperm(count, generator=torch.Generator().manual_seed(seed))
            if self.train
            else torch.arange(count)
        )
        batches = [order[i * self.batch_size : (i + 1) * self.batch_size] for i in range(len(self))]
        if self.shared:  # over several processes, each decodes only its share
            batches = [distributed.share(batch) for batch in batches]
        loader = DataLoader(
            _Decoded(self.files, self.labels, self.preprocess, seed),
            batch_sampler=[batch.tolist() for batch in batches],
            num_workers=self.files.workers,
            pin_memory=self.device.type == "cuda",
        )
        try:
            for images, labels in loader:
                yield (
                    images.to(self.device, non_blocking=True),
                    labels.to(self.device, non_blocking=True),
                )
        except UsageError as error:  # a worker's comes wrapped in its traceback: one line
            raise UsageError(
                str(error).strip().splitlines()[-1].split("UsageError: ")[-1]
            ) from None
