"""The model zoo's registry: a model registers where it is defined, by name.

Model code (this package and ``ghost``) decorates its factories with ``register_model``;
each package's ``__init__`` imports its model modules, so importing the package
registers them (timm's facade does the same). ``compress.create_model`` builds on this
table and adds timm's models and those that other packages declare as entry points.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

Factory = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its factory, the input it was designed for, and (for a
    compressed design) the uncompressed model it is read against."""

    name: str
    factory: Factory
    input_size: int
    num_classes: int
    reference: str | None = None  # e.g. ghost_vgg16 -> vgg16, ghostnet -> mobilenetv3_large
    family: str = ""  # "ghost" for the Ghost designs

    @property
    def options(self) -> tuple[str, ...]:
        """Keyword options the factory takes besides ``num_classes``."""
        params = inspect.signature(self.factory).parameters.values()
        return tuple(
            p.name for p in params if p.name != "num_classes" and p.kind is not p.VAR_KEYWORD
        )

    @property
    def description(self) -> str:
        return next(iter((inspect.getdoc(self.factory) or "").splitlines()), "")


MODELS: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    *,
    input_size: int,
    num_classes: int,
    reference: str | None = None,
    family: str = "",
) -> Callable[[Factory], Factory]:
    """Register a factory ``f(num_classes=..., **options) -> nn.Module`` under ``name``."""

    def decorator(factory: Factory) -> Factory:
        if name in MODELS:
            raise RuntimeError(f"model {name!r} is registered twice")
        MODELS[name] = ModelEntry(name, factory, input_size, num_classes, reference, family)
        return factory

    return decorator
