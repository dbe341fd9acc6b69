"""Options declared once, as typed dataclass fields, for the CLI, validation and records.

A field made with ``option()`` carries its help, allowed choices or range and, for
tunable ones, its Optuna search space. ``add_arguments`` turns a dataclass into argparse
options, ``from_values`` builds a validated instance, ``asdict`` is the saved record.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

from compress.errors import UsageError


def option(
    default: Any,
    help: str,
    *,
    choices: Sequence[Any] | None = None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    search: tuple[Any, ...] | None = None,
    applies: Callable[[dict[str, Any]], bool] | None = None,
) -> Any:
    """A dataclass field with the metadata that the CLI, validation and studies read.

    ``low``/``high`` bound the value (``*_open`` excludes the bound); ``search`` is an
    Optuna space: ``("int", lo, hi)``, ``("float", lo, hi)``, ``("log", lo, hi)`` or
    ``("choice", a, b, ...)``; ``applies(options)`` says whether the option matters
    given the other options (a study searches it only then).
    """
    metadata = {
        "help": help,
        "choices": choices,
        "low": low,
        "high": high,
        "low_open": low_open,
        "high_open": high_open,
        "search": search,
        "applies": applies,
    }
    return dataclasses.field(default=default, metadata=metadata)


def _base_type(hint: Any) -> tuple[type, bool]:
    """(scalar type, optional) of a field's annotation such as ``int | None``."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        scalar = next(a for a in args if a is not type(None))
        return scalar, True
    return hint, False


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


class Options:
    """Base of every config dataclass: validates fields on construction."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            scalar, optional = _base_type(hints[field.name])
            if value is None and optional:
                continue
            _check(field, scalar, value)
        self.check()

    def check(self) -> None:
        """Rules across fields; raise UsageError."""

    def to_record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


def _check(field: dataclasses.Field, scalar: type, value: Any) -> None:
    meta, name = field.metadata, flag(field.name)
    if scalar is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, scalar) or (scalar is int and isinstance(value, bool)):
        raise UsageError(f"{name} must be {scalar.__name__}, got {value!r}")
    if scalar is float and not math.isfinite(value):
        raise UsageError(f"{name} must be a finite number, got {value}")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise UsageError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
    low, high = meta.get("low"), meta.get("high")
    if low is not None and (value <= low if meta["low_open"] else value < low):
        raise UsageError(f"{name} must be {'>' if meta['low_open'] else '>='} {low}, got {value}")
    if high is not None and (value >= high if meta["high_open"] else value > high):
        raise UsageError(f"{name} must be {'<' if meta['high_open'] else '<='} {high}, got {value}")


def add_arguments(parser: argparse.ArgumentParser, cls: type, title: str) -> None:
    """One argparse option per field; defaults stay None so presets can fill them."""
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        scalar, optional = _base_type(hints[field.name])
        default = field.default
        help_text = f"{field.metadata['help']} (default: {default})"
        if scalar is bool:
            group.add_argument(
                flag(field.name),
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            group.add_argument(
                flag(field.name),
                type=_parse_optional(scalar) if optional and default is not None else scalar,
                default=None,
                help=help_text,
                metavar=field.name.upper(),
            )


class _ExplicitNone:
    """What ``--option none`` parses to, so that it differs from an option not given."""


EXPLICIT_NONE = _ExplicitNone()


def _parse_optional(scalar: type) -> Any:
    def parse(text: str) -> Any:
        return EXPLICIT_NONE if text.lower() == "none" else scalar(text)

    parse.__name__ = scalar.__name__
    return parse


def explicit(values: dict[str, Any]) -> dict[str, Any]:
    """The options a command line set (``none`` sets an optional one to None)."""
    return {k: None if v is EXPLICIT_NONE else v for k, v in values.items() if v is not None}


def from_values(cls: type, *layers: dict[str, Any]) -> Any:
    """An instance from defaults overridden by each layer in turn (e.g. preset, then CLI)."""
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for layer in layers:
        values.update({k: v for k, v in layer.items() if k in names})
    return cls(**values)
