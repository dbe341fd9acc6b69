"""``compress compare RUN_DIR ...``: the seed's table over finished runs, curves overlaid."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from compress import runs
from compress.cli.common import add_options, command, options_of
from compress.deploy import exporter_of, onnx_latencies_ms
from compress.errors import UsageError
from compress.loading import load_run
from compress.options import Options, option
from compress.plots import plot_compare
from compress.reports import compare_table, console

EXAMPLES = (
    "compress compare <RUN_DIR> <OTHER_RUN_DIR> --png runs/compare.png",
    "compress compare <RUN_DIR> <OTHER_RUN_DIR> --onnx   # and their ONNX Runtime latency",
)


@dataclass
class CompareOptions(Options):
    runs: tuple[str, ...] = option((), "run directories", positional=True)
    png: str = option("runs/compare.png", "where the overlaid curves go")
    onnx: bool = option(
        False, "also time each run's ONNX export in ONNX Runtime (CPU, 1 thread), side by side"
    )


def read_runs(directories: Sequence[str]) -> list[dict]:
    """metrics.json of each run directory; a run without epochs has nothing to compare.
    Latencies are marked as each run recorded them: they were not measured side by side."""
    runs_read = []
    for directory in directories:
        metrics = runs.read_metrics(Path(directory))
        if not metrics["history"]:
            raise UsageError(f"{directory} has no completed epoch to compare")
        runs_read.append({**metrics, "latency_source": "recorded by the run"})
    return runs_read


def execute(args: argparse.Namespace) -> None:
    options: CompareOptions = options_of(CompareOptions, args)
    compared = read_runs(options.runs)
    png = Path(options.png)
    runs.check_output(png, "--png")
    names = [Path(directory).name for directory in options.runs]
    if options.onnx:
        loaded = [load_run(directory) for directory in options.runs]
        sizes = {run.input["input_size"] for run in loaded}
        if len(sizes) > 1:
            raise UsageError("--onnx times runs side by side: they need one input size")
        exports = [(run.model, exporter_of(run.spec)) for run in loaded]
        for metrics, value in zip(compared, onnx_latencies_ms(exports, sizes.pop()), strict=True):
            metrics.update(ort_latency_ms=value, ort_threads=1)
    console.print(compare_table(names, compared))
    png.parent.mkdir(parents=True, exist_ok=True)
    plot_compare([(m["label"], m["history"]) for m in compared], png)
    console.print(f"wrote {png}", highlight=False)


def add_to(commands: argparse._SubParsersAction) -> None:
    parser = command(commands, "compare", "runs side by side: costs and curves", EXAMPLES, execute)
    add_options(parser, CompareOptions, "compare")
