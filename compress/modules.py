"""Your own ``nn.Module`` as a run's network or teacher, from Python.

``compress.run("prune", model=my_net, ...)`` compresses ``my_net`` as it is (its current
weights are where training starts) and ``distill`` takes ``teacher=my_trained_net``. A
run records networks by name, so each module is registered for this process as
``python:ClassName`` (a factory that hands out copies), and a teacher's weights are kept
as a checkpoint file in the results cache. ``compress.load`` rebuilds such a run in a
process that registers the same name again (``register_model``), or its weights load
into your module from ``model.safetensors``.
"""

from __future__ import annotations

import copy
import hashlib
import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from baselines.registry import MODELS, register_model

PREFIX = "python:"
_NAMES: dict[int, str] = {}  # id(module) -> the name it is registered under


def registered_name(module: nn.Module, input_size: int = 32) -> str:
    """The registry name that builds copies of ``module`` (registered on first use)."""
    if id(module) in _NAMES:
        return _NAMES[id(module)]
    base = f"{PREFIX}{type(module).__name__}"
    name, count = base, 1
    while name in MODELS:
        count += 1
        name = f"{base}-{count}"

    def factory(num_classes: int | None = None) -> nn.Module:
        return copy.deepcopy(module)

    factory.__doc__ = f"{type(module).__name__}, given from Python to compress.run."
    register_model(name, input_size=input_size, num_classes=0)(factory)
    _NAMES[id(module)] = name
    return name


def teacher_file(module: nn.Module, cache: Path) -> Path:
    """``module``'s weights as a checkpoint file in ``cache``, named by their content."""
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    data = buffer.getvalue()
    path = cache / f"teacher-{hashlib.sha256(data).hexdigest()[:12]}.pt"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return path


def named_modules(options: dict[str, Any], cache: Path) -> dict[str, Any]:
    """``options`` with every ``nn.Module`` value (``model``, ``backbone``, ``teacher``)
    replaced by what a run records: a registered name, or a teacher's checkpoint file."""
    named = dict(options)
    for key in ("model", "backbone"):
        if isinstance(named.get(key), nn.Module):
            named[key] = registered_name(named[key])
    teacher = named.get("teacher")
    if isinstance(teacher, nn.Module):
        named["teacher"] = str(teacher_file(teacher, cache))
        named["teacher_model"] = registered_name(teacher)
    return named
