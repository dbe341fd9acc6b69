"""One model registry for every command: ``create_model(name, num_classes=..., **options)``.

Models register themselves with ``@register_model``; torchvision's and timm's models
are reached by name, the latter as ``timm:NAME``.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import socket
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from compress.errors import UsageError, first_line

TIMM_PREFIX = "timm:"
# Modules whose import registers models; loaded on first use to keep ``import compress`` light.
_MODEL_MODULES = ("ghost.ghostnet", "ghost.backbones", "baselines.cifar", "baselines.torchvision")


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its factory and the input it was designed for."""

    name: str
    factory: Callable[..., nn.Module]
    input_size: int
    num_classes: int

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


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str, *, input_size: int, num_classes: int
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a factory ``f(num_classes=..., **options) -> nn.Module`` under ``name``."""

    def decorator(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise RuntimeError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelEntry(name, factory, input_size, num_classes)
        return factory

    return decorator


def _load_registrations() -> None:
    for module in _MODEL_MODULES:
        importlib.import_module(module)


def list_models() -> list[str]:
    """Names of the registered models (timm's are reached as ``timm:NAME`` on top)."""
    _load_registrations()
    return sorted(_REGISTRY)


def _timm_entry(timm_name: str) -> ModelEntry:
    import timm

    if not timm.is_model(timm_name):
        near = difflib.get_close_matches(timm_name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(TIMM_PREFIX + n for n in near)}?" if near else ""
        raise UsageError(f"unknown timm model {timm_name!r}{hint}")
    pretrained_cfg = timm.models.get_pretrained_cfg(timm_name)
    input_size = pretrained_cfg.input_size[-1] if pretrained_cfg else 224

    def factory(num_classes: int = 1000, **options: object) -> nn.Module:
        return timm.create_model(timm_name, pretrained=False, num_classes=num_classes, **options)

    factory.__doc__ = f"timm's {timm_name} (random init; pretrained weights need the internet)"
    return ModelEntry(TIMM_PREFIX + timm_name, factory, input_size, 1000)


def get_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``, or a UsageError that suggests near names."""
    if name.startswith(TIMM_PREFIX):
        return _timm_entry(name[len(TIMM_PREFIX) :])
    _load_registrations()
    if name not in _REGISTRY:
        near = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise UsageError(f"unknown model {name!r}{hint} (see `compress models`, or use timm:NAME)")
    return _REGISTRY[name]


def create_model(name: str, num_classes: int | None = None, **options: object) -> nn.Module:
    """Build a registered model; options it does not take, or out of range, are a UsageError."""
    entry = get_entry(name)
    if not name.startswith(TIMM_PREFIX):
        unknown = sorted(set(options) - set(entry.options))
        if unknown:
            accepted = ", ".join(entry.options) or "none"
            raise UsageError(
                f"model {name!r} takes no option {', '.join(unknown)} (it takes: {accepted})"
            )
    try:
        return entry.factory(
            num_classes=entry.num_classes if num_classes is None else num_classes, **options
        )
    except (ValueError, TypeError) as error:
        raise UsageError(f"{name}: {error}") from None
    except (RuntimeError, MemoryError) as error:  # e.g. a width the memory cannot hold
        raise UsageError(
            f"cannot build {name} with {options or 'its defaults'}: {first_line(error)}"
        ) from None


def _hub_reachable() -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
    except OSError:
        return False
    return True


def pretrained_model(name: str) -> nn.Module:
    """A timm model with its published weights (``resnet50`` or ``timm:resnet50``).

    Offline, a copy in the local Hugging Face cache still loads; without one the error
    says what to use instead, at once rather than after the hub client's retries.
    """
    import huggingface_hub.constants
    import timm

    timm_name = name.removeprefix("timm:")
    if not timm.is_model(timm_name):
        raise UsageError(f"{name} is neither a run directory nor a timm model name")
    if not _hub_reachable():
        huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        return timm.create_model(timm_name, pretrained=True).eval()
    except Exception as error:  # the hub client's errors vary by version
        reason = first_line(error)
        raise UsageError(
            f"cannot fetch the pretrained weights of {timm_name} ({reason}); offline, pass a "
            "run directory made by `compress run` instead, e.g. --model runs/<run>"
        ) from None
