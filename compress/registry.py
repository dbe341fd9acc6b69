"""One model registry for every command: ``create_model(name, num_classes=..., **options)``.

Models register where they are defined (``baselines.registry.register_model``, also
exported as ``compress.register_model``): ``ghost`` and ``baselines`` register theirs
when imported, and other packages declare a module to import in the ``compress.models``
entry-point group. timm's models are reached as ``timm:NAME``.
"""

from __future__ import annotations

import contextlib
import difflib
import socket
from collections.abc import Iterator
from functools import cache
from importlib.metadata import entry_points

from torch import nn

from baselines.registry import MODELS, ModelEntry, register_model
from compress.errors import UsageError, first_line

TIMM_PREFIX = "timm:"
ENTRY_POINT_GROUP = "compress.models"

__all__ = ["ModelEntry", "create_model", "get_entry", "list_models", "register_model"]


@cache
def _load_registrations() -> None:
    """Import the model packages (each registers its models), then the modules other
    packages declare in the ``compress.models`` entry-point group."""
    import baselines  # noqa: F401  (registers on import)
    import ghost  # noqa: F401

    for entry in entry_points(group=ENTRY_POINT_GROUP):
        entry.load()


def list_models() -> list[str]:
    """Names of the registered models (timm's are reached as ``timm:NAME`` on top)."""
    _load_registrations()
    return sorted(MODELS)


def models_of(family: str) -> list[str]:
    """The registered models of one family (e.g. ``ghost``), sorted by name."""
    _load_registrations()
    return sorted(name for name, entry in MODELS.items() if entry.family == family)


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
    if name not in MODELS:
        near = difflib.get_close_matches(name, list(MODELS), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise UsageError(f"unknown model {name!r}{hint} (see `compress models`, or use timm:NAME)")
    return MODELS[name]


def create_model(name: str, num_classes: int | None = None, **options: object) -> nn.Module:
    """Build a registered model, or one of timm's as ``timm:NAME`` (random weights).

    Args:
        name: a name from ``list_models()`` (``ghostnet``, ``vgg16``, ``resnet56`` ...) or
            ``timm:NAME``.
        num_classes: classifier outputs (default: the model's own, e.g. 1000 or 10).
        **options: what the factory takes, e.g. ``width``, ``s``, ``d``, ``cifar``.

    Returns:
        The ``nn.Module``. Unknown names, options the model does not take and values out
        of range raise ``UsageError`` (a ``ValueError``) saying which.
    """
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


@contextlib.contextmanager
def _offline_unless_reachable() -> Iterator[None]:
    """The Hugging Face client in offline mode (a cached copy loads at once, a missing one
    fails at once) while the hub cannot be reached; the process's setting comes back."""
    import huggingface_hub.constants as hub

    before = hub.HF_HUB_OFFLINE
    hub.HF_HUB_OFFLINE = before or not _hub_reachable()
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = before


def pretrained_model(name: str) -> nn.Module:
    """A timm model with its published weights (``resnet50`` or ``timm:resnet50``).

    Offline, a copy in the local Hugging Face cache still loads; without one the error
    says what to use instead, at once rather than after the hub client's retries.
    """
    import timm

    timm_name = name.removeprefix("timm:")
    if not timm.is_model(timm_name):
        raise UsageError(f"{name} is neither a run directory nor a timm model name")
    try:
        with _offline_unless_reachable():
            return timm.create_model(timm_name, pretrained=True).eval()
    except Exception as error:  # the hub client's errors vary by version
        reason = first_line(error)
        raise UsageError(
            f"cannot fetch the pretrained weights of {timm_name} ({reason}); offline, pass a "
            "run directory made by `compress run` instead, e.g. --model runs/<run>"
        ) from None
