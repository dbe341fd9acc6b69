"""``compress reproduce seed``: GhostNet against MobileNetV3-Large with the seed protocol."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from compress.cli.common import add_options, add_recipe, command, given, options_of
from compress.data import DataConfig
from compress.engine import TrainConfig
from compress.options import Options, option
from compress.reports import console, stderr_console
from compress.reproduce import SEED_MODELS, read_published, reproduce_seed
from compress.spec import RunSpec

EXAMPLES = (
    "compress reproduce seed                         # CIFAR-10, 30 epochs, both models",
    "compress reproduce seed --dataset digits --epochs 3   # a quick offline demo",
)


@dataclass
class SeedOptions(Options):
    published: str | None = option(
        None, "the seed's numbers as JSON {model: {row: value}} (default: the bundled ones)"
    )
    out: str = option("runs/reproduce-seed", "where report.md, curves.png and the runs go")


def execute(args: argparse.Namespace) -> None:
    options: SeedOptions = options_of(SeedOptions, args)
    published = read_published(options.published)
    recipe = given(args, DataConfig, TrainConfig)
    # Checked before the first epoch: the options must make a run.
    RunSpec.from_options("baseline", {"model": SEED_MODELS[0], **recipe}, "seed")
    report = reproduce_seed(Path(options.out), recipe, stderr_console(), published)
    console.print(f"wrote {report} and {report.parent / 'curves.png'}", highlight=False)


def add_to(commands: argparse._SubParsersAction) -> None:
    parser = command(commands, "reproduce", "reproduce a published experiment", EXAMPLES)
    experiments = parser.add_subparsers(dest="experiment", required=True)
    seed = command(
        experiments,
        "seed",
        "GhostNet vs MobileNetV3-Large with the seed protocol, as report.md",
        EXAMPLES,
        execute,
    )
    add_options(seed, SeedOptions, "report")
    add_recipe(seed, "the seed's protocol on CIFAR-10")
