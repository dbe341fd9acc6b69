"""``compress export RUN_DIR``: the run's network as ONNX, checked and timed on the spot."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from compress import runs
from compress.cli.common import add_options, command, options_of
from compress.deploy import FORMATS, export_run
from compress.options import Options, option
from compress.reports import console

EXAMPLES = (
    "compress export <RUN_DIR>                     # RUN_DIR/model.onnx, checked in ONNX Runtime",
    "compress export <RUN_DIR> --out model.onnx --threads 2",
)


@dataclass
class ExportOptions(Options):
    run_dir: str = option("", "a finished run's directory", positional=True)
    format: str = option("onnx", "what to write", choices=FORMATS)
    out: str | None = option(None, "the file (default: RUN_DIR/model.onnx)")
    threads: int = option(1, "ONNX Runtime threads for the check and the timing", low=1)
    batch: int = option(32, "the larger batch timed besides batch 1", low=1)
    repeats: int = option(30, "timed runs after warm-up, per batch size (0: no timing)", low=0)


def execute(args: argparse.Namespace) -> int:
    options: ExportOptions = options_of(ExportOptions, args)
    run_dir = Path(options.run_dir)
    out = Path(options.out) if options.out else None
    if out is not None:
        runs.check_output(out, "--out")
    result = export_run(run_dir, out, options.threads, options.batch, options.repeats)
    table = Table(title=f"{result['label']} as ONNX (ONNX Runtime, CPU, {options.threads} thr)")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("file", result["path"])
    table.add_row("form", result["form"])
    table.add_row("size", f"{result['onnx_bytes'] / 1e6:.2f} MB")
    table.add_row("top-1, ONNX Runtime", f"{100 * result['ort_top1']:.2f}%")
    if "ort_top1_unfused" in result:
        table.add_row("top-1, ONNX Runtime unfused", f"{100 * result['ort_top1_unfused']:.2f}%")
    table.add_row("top-1, PyTorch", f"{100 * result['torch_top1']:.2f}%")
    table.add_row("same answer as PyTorch", f"{100 * result['agreement']:.1f}% of images")
    if result["run_top1"] is not None:
        table.add_row("top-1, as the run recorded it", f"{100 * result['run_top1']:.2f}%")
    table.add_row("check", result["check"])
    for key, label in (("ort_latency_ms", "ONNX Runtime"), ("torch_latency_ms", "PyTorch")):
        for batch, value in result.get(key, {}).items():
            table.add_row(f"latency, batch {batch}, {label}", f"{value:.2f} ms")
    console.print(table)
    runs.update_metrics(run_dir, {"exports": {options.format: result}})
    return 0 if result["check"].startswith("passed") else 1


def add_to(commands: argparse._SubParsersAction) -> None:
    parser = command(
        commands,
        "export",
        "write a finished run's network as ONNX; run it in ONNX Runtime on the test split",
        EXAMPLES,
        execute,
    )
    add_options(parser, ExportOptions, "export")
