"""Search spaces read from the techniques' config declarations.

Every option declared with ``search=`` becomes an Optuna parameter named
``technique.option``; a trial first picks a technique, so the space is conditional.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import optuna

from compress.options import Options


def suggest(
    trial: optuna.Trial,
    technique: str,
    config_cls: type[Options],
    given: dict[str, Any] | None = None,
    skip: set[str] | None = None,
) -> dict[str, Any]:
    """Values for every searchable option of ``config_cls`` that applies with the
    options ``given`` (e.g. GhostNet's width only when GhostNet is built), from ``trial``;
    the options in ``skip`` are not searched (the study fixed them)."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(config_cls):
        space = field.metadata.get("search")
        applies = field.metadata.get("applies")
        if space is None or field.name in (skip or set()):
            continue
        if applies is not None and not applies({**(given or {}), **values}):
            continue
        kind, *bounds = space
        name = f"{technique}.{field.name}"
        if kind == "int":
            values[field.name] = trial.suggest_int(name, *bounds)
        elif kind in ("float", "log"):
            values[field.name] = trial.suggest_float(name, *bounds, log=kind == "log")
        elif kind == "choice":
            values[field.name] = trial.suggest_categorical(name, bounds)
        else:
            raise ValueError(f"unknown search space kind {kind!r} on {name}")
    return values


def searchable(config_cls: type[Options]) -> list[str]:
    """The options of ``config_cls`` that a study varies."""
    return [f.name for f in dataclasses.fields(config_cls) if f.metadata.get("search")]
