"""``compress list`` and ``compress models``: the techniques and the models there are."""

from __future__ import annotations

import argparse
import dataclasses

from rich.table import Table

from compress.cli.common import command
from compress.options import flag
from compress.registry import get_entry, list_models
from compress.reports import console
from compress.techniques import get_technique, list_techniques


def techniques(_args: argparse.Namespace) -> None:
    table = Table(title="Techniques (compose them: compress run ghost+prune)")
    for column in ("technique", "stage", "what it does", "options"):
        table.add_column(column)
    for name in list_techniques():
        technique = get_technique(name)
        options = "\n".join(
            f"{flag(f.name)} ({f.default}): {f.metadata['help']}"
            for f in dataclasses.fields(technique.config_cls)
        )
        table.add_row(name, technique.stage, technique.summary, options)
    console.print(table)


def models(_args: argparse.Namespace) -> None:
    table = Table(title="Registered models (any timm model also works as timm:NAME)")
    for column in ("name", "input", "classes", "options", "read against", "description"):
        # a name is what users type: never cut; the description wraps instead
        table.add_column(column, no_wrap=column == "name", overflow="fold")
    for name in list_models():
        entry = get_entry(name)
        table.add_row(
            name,
            str(entry.input_size),
            str(entry.num_classes),
            ", ".join(entry.options),
            entry.reference or "",
            entry.description,
        )
    console.print(table)


def add_to(commands: argparse._SubParsersAction) -> None:
    command(commands, "list", "the techniques and their options", ["compress list"], techniques)
    command(commands, "models", "the registered models", ["compress models"], models)
