"""What every command shares: one-line errors, examples in --help, options from dataclasses."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from compress.data import DataConfig
from compress.engine import TrainConfig
from compress.options import add_arguments, explicit


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line and exit code 2, like every other usage error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def command(
    parent: Any,
    name: str,
    help: str,
    examples: Sequence[str],
    handler: Callable[[argparse.Namespace], int | None] | None = None,
) -> argparse.ArgumentParser:
    """A sub-command whose --help ends with usage examples."""
    parser = parent.add_parser(
        name,
        help=help,
        description=help,
        epilog="examples:\n" + "\n".join(f"  {line}" for line in examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if handler is not None:
        parser.set_defaults(handler=handler)
    return parser


def add_options(parser: argparse.ArgumentParser, cls: type, title: str) -> None:
    """The flags of an options dataclass whose defaults argparse shows and fills in."""
    add_arguments(parser, cls, title, keep_defaults=True)


def add_recipe(parser: argparse.ArgumentParser, default: str = "") -> None:
    """The data and training options every training command takes (``default``: what
    their defaults are, when a preset changes them)."""
    suffix = f" (default: {default})" if default else ""
    add_arguments(parser, DataConfig, f"data{suffix}")
    add_arguments(parser, TrainConfig, f"training{suffix}")


def options_of(cls: type, args: argparse.Namespace, **extra: Any) -> Any:
    """An instance of ``cls`` from the parsed flags it declares (validated)."""
    names = {field.name for field in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in vars(args).items() if k in names}, **extra)


def given(args: argparse.Namespace, *classes: type) -> dict[str, Any]:
    """The options of ``classes`` that the command line set (for recipes with presets)."""
    names = {field.name for cls in classes for field in dataclasses.fields(cls)}
    return explicit({k: v for k, v in vars(args).items() if k in names})
