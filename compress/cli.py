"""The ``compress`` command line: one sub-command per job, errors as one line, exit code 2."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

import torch

from compress.errors import UsageError
from compress.measure import ESTIMATED, MEASURED, profile_model
from compress.registry import create_model, get_entry, list_models
from compress.reports import console, error_console, profile_table


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _model_options(names: Sequence[str], options: dict[str, object]) -> dict[str, dict]:
    """Give each model the options it takes; an option that no model takes is an error."""
    given = {key: value for key, value in options.items() if value is not None}
    accepted = {name: set(get_entry(name).options) for name in names}
    for key in given:
        if not any(key in taken for taken in accepted.values()):
            raise UsageError(f"no model among {', '.join(names)} takes option --{key}")
    return {name: {k: v for k, v in given.items() if k in accepted[name]} for name in names}


def resolve_device(name: str) -> torch.device:
    """'auto' is CUDA when present; asking for CUDA without it is a usage error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r} (use cpu, cuda, cuda:N or auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("CUDA was asked for but no CUDA device is available; use --device cpu")
    return device


def cmd_profile(args: argparse.Namespace) -> None:
    options = {"width": args.width, "s": args.s, "d": args.d}
    per_model = _model_options(args.models, options)
    device = resolve_device(args.device)
    profiles = []
    for name in args.models:
        entry = get_entry(name)
        model = create_model(name, num_classes=args.num_classes, **per_model[name])
        size = args.input_size or entry.input_size
        try:
            profiles.append(profile_model(model, size, device, args.repeats))
        except RuntimeError as error:
            reason = str(error).strip().splitlines()[0]
            raise UsageError(f"input size {size} is too small for {name}: {reason}") from None
    if args.json:
        records = [
            {
                "model": name,
                "options": per_model[name],
                **profile.to_dict(),
                "measured": list(MEASURED),
                "estimated": list(ESTIMATED),
            }
            for name, profile in zip(args.models, profiles, strict=True)
        ]
        print(json.dumps(records, indent=2))
    else:
        console.print(profile_table(args.models, profiles))


def cmd_models(args: argparse.Namespace) -> None:
    from rich.table import Table

    table = Table(title="Registered models (any timm model also works as timm:NAME)")
    for column in ("name", "input", "classes", "options", "description"):
        table.add_column(column)
    for name in list_models():
        entry = get_entry(name)
        table.add_row(name, str(entry.input_size), str(entry.num_classes),
                      ", ".join(entry.options), entry.description)  # fmt: skip
    console.print(table)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line and exit code 2, like every other usage error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="compress",
        description="Compare CNN compression techniques by accuracy per FLOP, param and ms.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    profile = commands.add_parser("profile", help="params, MACs, memory and latency of models")
    profile.add_argument("models", nargs="+", metavar="MODEL", help="e.g. ghostnet, timm:NAME")
    profile.add_argument("--width", type=float, help="width multiplier")
    profile.add_argument("--s", type=int, help="Ghost ratio s (>= 2)")
    profile.add_argument("--d", type=int, help="Ghost cheap depthwise kernel d (odd)")
    profile.add_argument("--input-size", type=positive_int, help="default: the model's own")
    profile.add_argument("--num-classes", type=positive_int, help="default: the model's own")
    profile.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    profile.add_argument("--repeats", type=int, default=30, help="latency runs; 0 skips timing")
    profile.add_argument("--json", action="store_true", help="print JSON instead of a table")
    profile.set_defaults(handler=cmd_profile)

    models = commands.add_parser("models", help="list the registered models")
    models.set_defaults(handler=cmd_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], None] = args.handler
    try:
        handler(args)
    except UsageError as error:
        error_console.print(
            f"compress {args.command}: error: {error}", highlight=False, soft_wrap=True
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
