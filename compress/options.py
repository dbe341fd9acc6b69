"""Options declared once, as typed dataclass fields, for the CLI, validation and records.

A field made with ``option()`` carries its help, allowed choices or range and, for
tunable ones, its Optuna search space. ``add_arguments`` turns a dataclass into argparse
options (defaults and choices shown in ``--help``), ``from_values`` builds a validated
instance, ``to_record`` is the saved record. A ``tuple[int, ...]`` or ``tuple[str, ...]``
field is a comma-separated list on the command line.
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
    positional: bool = False,
    cli: bool = True,
) -> Any:
    """A dataclass field with the metadata that the CLI, validation and studies read.

    ``low``/``high`` bound the value (``*_open`` excludes the bound; a list's every
    item); ``search`` is an Optuna space: ``("int", lo, hi)``, ``("float", lo, hi)``,
    ``("log", lo, hi)`` or ``("choice", a, b, ...)``; ``applies(options)`` says whether
    the option matters given the other options (a study searches it only then).
    ``positional``: a command-line argument without a flag; ``cli=False``: set from
    Python only (e.g. what the program fills in itself).
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
        "positional": positional,
        "cli": cli,
    }
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class FieldType:
    """What a field's annotation says: ``int | None`` is (int, optional, not a list)."""

    scalar: type
    optional: bool = False
    many: bool = False  # tuple[X, ...]: a comma-separated list


def field_type(hint: Any) -> FieldType:
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
        optional = True
    if typing.get_origin(hint) is tuple:
        return FieldType(typing.get_args(hint)[0], optional, many=True)
    return FieldType(hint, optional)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


class Options:
    """Base of every config dataclass: validates fields on construction."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            if "help" not in field.metadata:  # a plain field: state, not an option
                continue
            value = getattr(self, field.name)
            kind = field_type(hints[field.name])
            if value is None and kind.optional:
                continue
            if kind.many:
                if not isinstance(value, tuple | list):
                    raise UsageError(f"{flag(field.name)} must be a list, got {value!r}")
                value = tuple(value)
                setattr(self, field.name, value)
                for item in value:
                    _check(field, kind.scalar, item)
            else:
                _check(field, kind.scalar, value)
        self.check()

    def check(self) -> None:
        """Rules across fields; raise UsageError."""

    def to_record(self) -> dict[str, Any]:
        return {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in dataclasses.asdict(self).items()  # type: ignore[call-overload]
        }


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


def _help(field: dataclasses.Field) -> str:
    text = field.metadata["help"]
    default = field.default
    if isinstance(default, tuple):
        default = ",".join(map(str, default)) or "none"
    notes = [] if field.metadata.get("positional") else [f"default: {default}"]
    if field.metadata.get("choices") is not None:
        notes.append(f"choices: {', '.join(map(str, field.metadata['choices']))}")
    return f"{text} ({'; '.join(notes)})" if notes else text


def comma_list(scalar: type) -> Callable[[str], tuple[Any, ...]]:
    """argparse type: ``"2,3,4"`` -> ``(2, 3, 4)``; ``""`` -> ``()``."""

    def parse(text: str) -> tuple[Any, ...]:
        try:
            return tuple(scalar(part.strip()) for part in text.split(",") if part.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {scalar.__name__}s separated by commas, got {text!r}"
            ) from None

    parse.__name__ = f"comma-separated {scalar.__name__}"
    return parse


def add_arguments(
    parser: argparse.ArgumentParser, cls: type, title: str, keep_defaults: bool = False
) -> None:
    """One argparse option per field. Defaults stay None so presets can fill them in;
    ``keep_defaults`` gives argparse the fields' defaults (for commands with no preset)."""
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if not field.metadata.get("cli", "help" in field.metadata):
            continue
        kind = field_type(hints[field.name])
        default = field.default if keep_defaults else None
        if field.metadata.get("positional"):
            group.add_argument(
                field.name,
                nargs="+" if kind.many else None,
                type=kind.scalar,
                help=_help(field),
                metavar=field.name.upper().rstrip("S") if kind.many else field.name.upper(),
            )
        elif kind.scalar is bool and not kind.many:
            group.add_argument(
                flag(field.name),
                action=argparse.BooleanOptionalAction,
                default=default,
                help=_help(field),
            )
        else:
            if kind.many:
                parse: Callable[[str], Any] = comma_list(kind.scalar)
            elif kind.optional and field.default is not None:
                parse = _parse_optional(kind.scalar)
            else:
                parse = kind.scalar
            group.add_argument(
                flag(field.name),
                type=parse,
                default=default,
                help=_help(field),
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


BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def parse_value(cls: type, name: str, text: str) -> Any:
    """``text`` read as option ``name`` of ``cls`` declares it (``none`` for an optional
    one); a UsageError names the option when it cannot be."""
    kind = field_type(typing.get_type_hints(cls)[name])
    if kind.optional and text.lower() == "none":
        return None
    try:
        if kind.many:
            return comma_list(kind.scalar)(text)
        if kind.scalar is bool:
            return BOOLEANS[text.lower()]
        return kind.scalar(text)
    except (KeyError, ValueError, argparse.ArgumentTypeError):
        raise UsageError(f"{flag(name)} must be {kind.scalar.__name__}, got {text!r}") from None


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
