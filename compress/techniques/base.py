"""The technique interface and its registry.

A technique is a class with a config dataclass (its options, declared once) and the
stages it takes part in. ``build_model`` makes the network a run starts from.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any, ClassVar

from torch import nn

from compress.errors import UsageError
from compress.options import Options

_TECHNIQUES: dict[str, type[Technique]] = {}
_BUILTIN = ("compress.techniques.baseline", "compress.techniques.ghost")


class Technique:
    """Base class: subclasses set ``name`` and ``config_cls`` and override their stages."""

    name: ClassVar[str]
    config_cls: ClassVar[type[Options]]
    summary: ClassVar[str] = ""

    def build_model(self, config: Any, num_classes: int, image_size: int) -> nn.Module:
        """The network to train; ``image_size`` lets a model adapt to small inputs."""
        raise NotImplementedError

    def reference_model(self, config: Any) -> str | None:
        """Registry name of the uncompressed model this result should be read against."""
        return None

    def label(self, config: Any) -> str:
        """Short name of the result, for tables and run directories."""
        return self.name


def register_technique(name: str):
    """Class decorator: make a ``Technique`` subclass available as ``compress run NAME``."""

    def decorator(cls: type[Technique]) -> type[Technique]:
        if name in _TECHNIQUES:
            raise RuntimeError(f"technique {name!r} is registered twice")
        cls.name = name
        _TECHNIQUES[name] = cls
        return cls

    return decorator


def _load_builtin() -> None:
    for module in _BUILTIN:
        importlib.import_module(module)


def list_techniques() -> list[str]:
    _load_builtin()
    return sorted(_TECHNIQUES)


def get_technique(name: str) -> Technique:
    _load_builtin()
    if name not in _TECHNIQUES:
        near = difflib.get_close_matches(name, list(_TECHNIQUES), n=2)
        hint = f"; did you mean {' or '.join(near)}?" if near else ""
        raise UsageError(
            f"unknown technique {name!r}{hint} (choose from {', '.join(sorted(_TECHNIQUES))})"
        )
    return _TECHNIQUES[name]()
