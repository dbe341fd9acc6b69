"""Where a compressed network would run: ONNX Runtime latency, side by side, one process.

Three comparisons, each timed interleaved (the models take turns in every repeat, median
of ``--repeats``; ``--rounds`` such timings, their median shown with their range, and the
share of the CPUs other processes used just before), batch 1 unless ``--batch`` says
more, ``--threads`` threads, in ONNX Runtime (CPU) and in eager PyTorch for reference:

1. GhostNet 1.0x vs MobileNetV3-Large at 224x224 (the seed's mobile claim);
2. ResNet-20 fp32 vs its 8-bit export (QCDQ, run by ONNX Runtime's integer kernels);
3. VGG-16 vs Ghost-VGG-16 (s=2, d=3) vs VGG-16 with 50% of its channels pruned.

Latency does not depend on what the weights learned: the networks of 2 and 3 are made
by ``compress.run`` on synthetic data with one short epoch (the 8-bit one calibrated as
PTQ does), so their structure is exactly what a real run delivers.

    python bench/deploy_latency.py --repeats 50 --threads 1
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from compress import create_model, run
from compress.deploy import exporter_of, onnx_latencies_ms
from compress.loading import load_run
from compress.measure import count_macs, cpu_used_by_others, latencies_ms

QUICK = {"dataset": "synthetic", "epochs": 1, "batch_size": 64, "train_size": 128}
INT8 = {"weight_bits": 8, "act_bits": 8}


def trained(out: Path, technique: str, **options: object) -> tuple[torch.nn.Module, object]:
    outcome = run(technique, out, console=Console(quiet=True), **QUICK, **options)
    loaded = load_run(outcome.run_dir)
    return loaded.model, exporter_of(loaded.spec)


def compare(
    title: str, entries: list[tuple[str, torch.nn.Module, object]], size: int, args
) -> Table:
    example = torch.randn(args.batch, 3, size, size)
    others = cpu_used_by_others()
    rounds = [
        onnx_latencies_ms(
            [(model, export) for _, model, export in entries],
            size,
            args.threads,
            args.batch,
            args.repeats,
        )
        for _ in range(args.rounds)
    ]
    ort = [statistics.median(model_rounds) for model_rounds in zip(*rounds, strict=True)]
    torch.set_num_threads(args.threads)
    eager = latencies_ms([model for _, model, _ in entries], example, args.repeats)
    busy = "" if others is None else f"; others used {100 * others:.0f}% of the CPUs before"
    table = Table(
        title=f"{title}: {size}x{size}, batch {args.batch}, {args.threads} thread(s){busy}"
    )
    columns = ("model", "MACs", f"ONNX Runtime (range of {args.rounds} rounds)", "PyTorch eager")
    for column in (*columns, "ORT vs first"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for index, ((name, model, _), ort_ms, eager_ms) in enumerate(
        zip(entries, ort, eager, strict=True)
    ):
        macs = count_macs(model, torch.zeros(1, 3, size, size))
        spread = [one[index] for one in rounds]
        table.add_row(
            name,
            f"{macs / 1e6:.1f} M",
            f"{ort_ms:.2f} ms ({min(spread):.2f}-{max(spread):.2f})",
            f"{eager_ms:.2f} ms",
            f"{ort[0] / ort_ms:.2f}x",
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (median shown)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    console = Console()
    console.print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        mobile = [
            (name, create_model(name).eval(), None) for name in ("ghostnet", "mobilenetv3_large")
        ]
        console.print(compare("GhostNet vs MobileNetV3-Large", mobile, 224, args))
        resnet = [
            ("resnet20 fp32", *trained(out, "baseline", model="resnet20")),
            (
                "resnet20 int8 (PTQ)",
                *trained(out, "quantize", model="resnet20", mode="ptq", **INT8),
            ),
        ]
        console.print(compare("ResNet-20, fp32 vs 8-bit", resnet, 32, args))
        vgg = [
            ("vgg16", *trained(out, "baseline", model="vgg16")),
            ("ghost_vgg16 s=2 d=3", *trained(out, "ghost", backbone="vgg16", s=2, d=3)),
            ("vgg16 50% channels pruned", *trained(out, "prune", model="vgg16", ratio=0.5)),
        ]
        console.print(compare("VGG-16: Ghost vs channel pruning", vgg, 32, args))


if __name__ == "__main__":
    main()
