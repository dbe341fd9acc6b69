"""Training images/s of compress's engine against a naive loop, same machine, same run,
and both against the machine's own peak: the FLOP/s of a large fp32 matrix product,
measured in the same run.

Naive: torchvision ``DataLoader`` over PIL images with PIL transforms (random crop with
4px padding, flip, [resize], to-tensor, normalise) feeding the eager fp32 network (timm's
``ghostnet_100`` for GhostNet, this repo's module for the CIFAR ResNets). Engine: the
whole split as uint8 on the device, batched augmentation there, training this repo's
network (the same one) with the engine's defaults, or with each variant given:
``+``-joined switches among eager (no CUDA graph), graph, amp, cl (channels-last) and
compile, e.g. ``--variants default,eager,graph+amp+cl``. A training step is counted as
three forward passes of FLOPs (2 x MACs each: forward, and the two products of the
backward), the usual estimate.

    python bench/train_throughput.py --size 32 --steps 20
    python bench/train_throughput.py --model resnet56 --steps 20
    python bench/train_throughput.py --size 224 --steps 20 --device cuda --variants default,eager
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import timm
import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from torch.utils.data import DataLoader
from torchvision import transforms

from compress.data import Dataset, load_dataset, make_synthetic
from compress.engine import TrainConfig, Trainer
from compress.registry import create_model

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


class PILImages(torch.utils.data.Dataset):
    """uint8 NCHW images served one at a time as PIL, the way torchvision's CIFAR10 does."""

    def __init__(self, data: Dataset, transform: transforms.Compose) -> None:
        self.images = data.train_x.permute(0, 2, 3, 1).numpy()
        self.labels = data.train_y.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[index])), self.labels[index]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def naive(data: Dataset, args: argparse.Namespace, device: torch.device) -> float:
    steps = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
    if args.size != 32:
        steps.append(transforms.Resize(args.size))
    steps += [transforms.ToTensor(), transforms.Normalize(data.mean, data.std)]
    loader = DataLoader(
        PILImages(data, transforms.Compose(steps)),
        args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=args.workers > 0,
    )
    if args.model == "ghostnet":
        model = timm.create_model("ghostnet_100", num_classes=10).to(device)
    else:
        model = create_model(args.model, num_classes=10).to(device)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3, weight_decay=1e-4)
    criterion = torch.nn.CrossEntropyLoss()
    model.train()
    seen, start = 0, 0.0
    batches = iter(loader)
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            sync(device)
            start = time.perf_counter()
        images, labels = next(batches)
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        loss = criterion(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(labels) if step >= args.warmup else 0
    sync(device)
    return seen / (time.perf_counter() - start)


SWITCHES = {
    "default": {},
    "eager": {"cuda_graph": False},
    "graph": {"cuda_graph": True},
    "amp": {"amp": True},
    "cl": {"channels_last": True},
    "compile": {"compile": True, "cuda_graph": False},
}


def variant_options(variant: str) -> dict[str, object]:
    options: dict[str, object] = {}
    for switch in variant.split("+"):
        if switch not in SWITCHES:
            raise SystemExit(f"unknown switch {switch!r} in {variant!r}: use {', '.join(SWITCHES)}")
        options.update(SWITCHES[switch])
    return options


def engine(data: Dataset, args: argparse.Namespace, device: torch.device, variant: str) -> float:
    config = TrainConfig(
        batch_size=args.batch_size,
        device=str(device),
        input_size=args.size,
        epochs=1,
        **variant_options(variant),
    )
    torch.manual_seed(0)
    model = create_model(args.model, num_classes=10)
    trainer = Trainer(model, data, config, torch.Generator().manual_seed(0))
    progress = Progress(disable=True)
    task = progress.add_task("", total=1)
    trainer.train_epoch(progress, task)  # warm-up: cuDNN choices, graph capture, compilation
    return trainer.train_epoch(progress, task)["images_per_s"]


def peak_gflops(device: torch.device, side: int = 2048, repeats: int = 10) -> float:
    """fp32 GFLOP/s of ``side`` x ``side`` matrix products: about the most this device's
    BLAS gets from its cores, the ceiling any training step sits under."""
    a, b = torch.randn(side, side, device=device), torch.randn(side, side, device=device)
    for _ in range(2):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * side**3 * repeats / (time.perf_counter() - start) / 1e9


def training_gflop(model: str, size: int) -> float:
    """GFLOP of one training image: three forward passes of 2 x MACs."""
    from compress.measure import count_macs

    network = create_model(model, num_classes=10).eval()
    return 3 * 2 * count_macs(network, torch.zeros(1, 3, size, size)) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ghostnet", choices=("ghostnet", "resnet20", "resnet56"))
    parser.add_argument("--size", type=int, default=32, help="input size (32 or 224)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument(
        "--warmup", type=int, default=3, help="untimed naive steps first (the engine: one epoch)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=2, help="naive loader worker processes")
    parser.add_argument("--variants", default="default", help="engine variants, comma-separated")
    parser.add_argument("--data", type=Path, default=SHARED, help="CIFAR-10 .npz shards")
    args = parser.parse_args()
    device = torch.device(args.device)
    variants = args.variants.split(",")
    for variant in variants:
        variant_options(variant)
    if args.data.is_dir():
        source = load_dataset("cifar10", args.data)
    else:
        source = make_synthetic(5000, 10, 10)
    need = (args.warmup + args.steps) * args.batch_size
    data = dataclasses.replace(source, train_x=source.train_x[:need], train_y=source.train_y[:need])
    if len(data.train_x) < need:
        raise SystemExit(f"need {need} images, have {len(data.train_x)}: fewer --steps")
    peak = peak_gflops(device)
    per_image = training_gflop(args.model, args.size)
    naive_rate = naive(data, args, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    table = Table(
        title=f"{args.model} training throughput on {name} ({torch.get_num_threads()} threads), "
        f"{args.size}px, batch {args.batch_size}; peak fp32 matrix product {peak:.1f} GFLOP/s"
    )
    for column in ("loop", "img/s", "vs naive", "GFLOP/s", "share of peak"):
        table.add_column(column, justify="right")

    def add(loop: str, rate: float) -> None:
        achieved = rate * per_image
        cells = (f"{rate:.0f}", f"{rate / naive_rate:.2f}x", f"{achieved:.1f}")
        table.add_row(loop, *cells, f"{100 * achieved / peak:.1f}%")
        print(
            f"{loop}: {rate:.1f} img/s, ratio {rate / naive_rate:.3f}, "
            f"{100 * achieved / peak:.1f}% of peak",
            flush=True,
        )

    add("naive", naive_rate)
    for variant in variants:
        add(f"engine {variant}", engine(data, args, device, variant))
    Console().print(table)


if __name__ == "__main__":
    main()
