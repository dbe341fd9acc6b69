"""``compress profile MODEL ...``: params, MACs, memory and latency of models at batch 1."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from compress import runs
from compress.cli.common import add_options, command, options_of
from compress.deploy import onnx_latencies_ms
from compress.engine import resolve_device
from compress.errors import UsageError
from compress.measure import ESTIMATED, MEASURED, profile_model
from compress.options import Options, option
from compress.registry import create_model, get_entry
from compress.reports import console, profile_table
from compress.runner import dry_run
from compress.techniques.ghost import D_HELP, S_HELP

EXAMPLES = (
    "compress profile ghostnet mobilenetv3_large       # the paper's headline pair, 224x224",
    "compress profile ghost_vgg16 vgg16 --s 4 --d 1    # a point of the paper's ablation",
    "compress profile ghostnet timm:ghostnet_130 --width 1.3",
    "compress profile ghostnet mobilenetv3_large --onnx  # and in ONNX Runtime",
)


@dataclass
class ProfileOptions(Options):
    models: tuple[str, ...] = option(
        (), "models: names from `compress models`, or timm:NAME", positional=True
    )
    width: float | None = option(
        None, "width multiplier (models that take one)", low=0, low_open=True
    )
    s: int | None = option(None, S_HELP, low=2)
    d: int | None = option(None, D_HELP, low=1)
    input_size: int | None = option(None, "input side in pixels (default: the model's own)", low=1)
    num_classes: int | None = option(None, "classifier outputs (default: the model's own)", low=1)
    device: str = option("cpu", "cpu, cuda, cuda:N or auto")
    repeats: int = option(30, "latency runs after warm-up (0: no timing)", low=0)
    onnx: bool = option(
        False, "also time each model exported to ONNX, in ONNX Runtime (CPU, 1 thread)"
    )
    json: bool = option(False, "print JSON instead of a table")


def model_options(names: Sequence[str], options: dict[str, object]) -> dict[str, dict]:
    """Give each model the options it takes; an option that no model takes is an error."""
    given = {key: value for key, value in options.items() if value is not None}
    accepted = {name: set(get_entry(name).options) for name in names}
    for key in given:
        if not any(key in taken for taken in accepted.values()):
            raise UsageError(f"no model among {', '.join(names)} takes option --{key}")
    return {name: {k: v for k, v in given.items() if k in accepted[name]} for name in names}


def execute(args: argparse.Namespace) -> None:
    options: ProfileOptions = options_of(ProfileOptions, args)
    per_model = model_options(
        options.models, {"width": options.width, "s": options.s, "d": options.d}
    )
    device = resolve_device(options.device)
    profiles, models = [], []
    for name in options.models:
        model = create_model(name, num_classes=options.num_classes, **per_model[name])
        size = options.input_size or get_entry(name).input_size
        dry_run(model, size, name)
        models.append((model, size))
        profiles.append(profile_model(model, size, device, options.repeats))
    records = [profile.to_dict() for profile in profiles]
    if options.onnx and options.repeats:
        for size in {size for _, size in models}:  # side by side where inputs match
            same = [i for i, (_, other) in enumerate(models) if other == size]
            times = onnx_latencies_ms(
                [(models[i][0], None) for i in same], size, 1, 1, options.repeats
            )
            for index, value in zip(same, times, strict=True):
                records[index].update(ort_latency_ms=value, ort_threads=1)
    if options.json:
        records = [
            {
                "model": name,
                "options": per_model[name],
                **record,
                "measured": list(MEASURED),
                "estimated": list(ESTIMATED),
            }
            for name, record in zip(options.models, records, strict=True)
        ]
        print(runs.dumps(records))
    else:
        console.print(profile_table(options.models, records))


def add_to(commands: argparse._SubParsersAction) -> None:
    parser = command(
        commands, "profile", "params, MACs, memory and latency of models", EXAMPLES, execute
    )
    add_options(parser, ProfileOptions, "profile")
