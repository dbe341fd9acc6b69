"""Trained weights as other people publish them, fitted to a network of this toolkit.

People publish a ``torch.save``d state dict, bare or inside a dict (``state_dict``,
``model``, ``net``, ``model_state_dict``), often with the ``module.`` prefix that
``DataParallel`` adds, and under their own layer names. ``read_checkpoint`` unwraps it
without running any code in the file (``weights_only=True``); ``match_state`` pairs its
tensors with a network's: by name first, then the rest in order, by shape. A match that
would leave a tensor of the network unfilled, leave one of the file unused, or depend on
a guess is refused with the reason, in one line.
"""

from __future__ import annotations

import hashlib
import pickle
import warnings
import zipfile
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.errors import UsageError, first_line

WRAPPERS = ("state_dict", "model", "net", "model_state_dict")
PREFIX = "module."
# Buffers that count BatchNorm updates: they do not change what the network computes,
# and checkpoints saved before PyTorch 0.4.1 do not have them (the network keeps its own).
OPTIONAL = "num_batches_tracked"


@dataclass
class Match:
    """How a file's tensors fill a network's state dict."""

    state: dict[str, torch.Tensor]  # the network's names -> the file's tensors
    renamed: dict[str, str] = field(default_factory=dict)  # network name -> file name
    kept: list[str] = field(default_factory=list)  # optional buffers the file lacks
    new: list[str] = field(default_factory=list)  # a new classifier's, initialised here

    def summary(self) -> str:
        """The match in one line: how many tensors came by name, which were renamed."""
        by_name = len(self.state) - len(self.renamed)
        text = f"{len(self.state)} tensors: {by_name} by name"
        if self.renamed:
            pairs = list(self.renamed.items())
            shown = ", ".join(f"{theirs} -> {ours}" for ours, theirs in pairs[:3])
            more = f", and {len(pairs) - 3} more" if len(pairs) > 3 else ""
            text += f", {len(pairs)} in order by shape ({shown}{more})"
        if self.new:
            text += f"; a new classifier ({', '.join(self.new)}) for these classes"
        return text


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a foreign checkpoint file, unwrapped, with ``module.`` dropped.

    Loaded with ``weights_only=True``: a pickle that would run code is refused, not run.
    """
    if not path.is_file():
        raise UsageError(f"checkpoint {path} is not a file")
    try:
        with warnings.catch_warnings():  # notes on pickle protocols, for torch's developers
            warnings.simplefilter("ignore")
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        detail = str(error).partition("WeightsUnpickler error:")[2].strip().splitlines()
        raise UsageError(
            f"checkpoint {path} was not loaded: it is not a file of tensors alone, and "
            f"nothing in it may run ({detail[0] if detail else first_line(error)[:120]})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as error:
        raise UsageError(
            f"cannot read checkpoint {path} (truncated or not a PyTorch file?): "
            f"{first_line(error)[:160]}"
        ) from None
    state = loaded
    while isinstance(state, Mapping) and not _is_state(state):
        inner = next((state[key] for key in WRAPPERS if isinstance(state.get(key), Mapping)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, Mapping) or not _is_state(state):
        keys = ", ".join(map(str, list(state)[:5])) if isinstance(state, Mapping) else ""
        raise UsageError(
            f"checkpoint {path} holds no state dict (a dict of tensors, bare or under "
            f"{', '.join(WRAPPERS)}){f'; its keys: {keys}' if keys else ''}"
        )
    tensors = {str(k): v for k, v in state.items() if torch.is_tensor(v)}
    if all(name.startswith(PREFIX) for name in tensors):
        tensors = {name.removeprefix(PREFIX): v for name, v in tensors.items()}
    return tensors


def _is_state(mapping: Mapping[Any, Any]) -> bool:
    return bool(mapping) and any(torch.is_tensor(v) for v in mapping.values())


def _shape(tensor: torch.Tensor) -> str:
    return "x".join(map(str, tensor.shape)) or "scalar"


def match_state(
    model: nn.Module,
    tensors: dict[str, torch.Tensor],
    source: str,
    fresh: Collection[str] = (),
) -> Match:
    """Pair every tensor of ``model``'s state dict with one of ``tensors``: by name where
    the name and shape agree, then the rest in the order both list them, shape by shape.
    A tensor named in ``fresh`` (a new classifier, for other classes) that the file has
    in another shape keeps its initialisation, and the file's is left out.

    Refused (``UsageError``): a network tensor left unfilled or a file tensor left over
    (another architecture), or an order whose shapes disagree where the shapes alone
    cannot decide (a guess)."""
    own = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    for name, tensor in own.items():
        theirs = tensors.get(name)
        if theirs is not None and theirs.shape == tensor.shape:
            state[name] = theirs
    new = [n for n in fresh if n in own and n in tensors and n not in state]
    left_own = [n for n in own if n not in state and n not in new]
    left_theirs = [n for n in tensors if n not in state and n not in new]
    kept: list[str] = []
    if not any(tensors[n].dim() == 0 for n in left_theirs):  # a file without the counters
        kept = [n for n in left_own if n.endswith(OPTIONAL)]
        left_own = [n for n in left_own if n not in kept]
    renamed = _pair_rest(own, tensors, left_own, left_theirs, source)
    state.update({ours: tensors[theirs] for ours, theirs in renamed.items()})
    for name in [*kept, *new]:
        state[name] = own[name]
    return Match(state, renamed, kept, new)


def _pair_rest(
    own: dict[str, torch.Tensor],
    tensors: dict[str, torch.Tensor],
    left_own: list[str],
    left_theirs: list[str],
    source: str,
) -> dict[str, str]:
    """The tensors that names did not pair, paired in order (or by a shape each side has
    once); a UsageError when that is impossible or a guess."""
    own_shapes = Counter(tuple(own[n].shape) for n in left_own)
    their_shapes = Counter(tuple(tensors[n].shape) for n in left_theirs)
    if own_shapes != their_shapes:
        missing = next(
            (
                n
                for n in left_own
                if own_shapes[tuple(own[n].shape)] > their_shapes[tuple(own[n].shape)]
            ),
            None,
        )
        extra = next(
            (
                n
                for n in left_theirs
                if their_shapes[tuple(tensors[n].shape)] > own_shapes[tuple(tensors[n].shape)]
            ),
            None,
        )
        parts = []
        if missing is not None:
            parts.append(f"nothing in it fits the network's {missing} ({_shape(own[missing])})")
        if extra is not None:
            parts.append(f"its {extra} ({_shape(tensors[extra])}) has no place in the network")
        unfilled = sum((own_shapes - their_shapes).values())
        unused = sum((their_shapes - own_shapes).values())
        raise UsageError(
            f"{source} does not fit this network ({unfilled} of its {len(own)} tensors "
            f"unfilled, {unused} of the file's {len(tensors)} unused): {'; '.join(parts)}"
        )
    in_order = all(
        own[ours].shape == tensors[theirs].shape
        for ours, theirs in zip(left_own, left_theirs, strict=True)
    )
    if in_order:
        return dict(zip(left_own, left_theirs, strict=True))
    if all(count == 1 for count in own_shapes.values()):  # each shape names one tensor
        by_shape = {tuple(tensors[n].shape): n for n in left_theirs}
        return {ours: by_shape[tuple(own[ours].shape)] for ours in left_own}
    first = next(
        ours
        for ours, theirs in zip(left_own, left_theirs, strict=True)
        if own[ours].shape != tensors[theirs].shape
    )
    raise UsageError(
        f"{source}: {len(left_own)} tensors differ in name from the network's and their "
        f"order does not follow its layers (from {first} on), so which is which would be "
        "a guess: rename the file's keys to the network's"
    )


def classifier_names(model: nn.Module) -> list[str]:
    """The state-dict names of the network's last linear layer: its classifier, which a
    checkpoint of other classes leaves to be learned anew (transfer learning)."""
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        return []
    prefix = f"{linears[-1]}." if linears[-1] else ""
    return [f"{prefix}weight", f"{prefix}bias"]


def load_foreign(model: nn.Module, path: Path) -> dict[str, Any]:
    """Fill ``model`` with the checkpoint at ``path`` (a classifier for other classes
    stays new); what was loaded, for the record."""
    tensors = read_checkpoint(path)
    match = match_state(model, tensors, f"checkpoint {path.name}", classifier_names(model))
    own = model.state_dict()
    with torch.no_grad():
        state = {name: tensor.to(own[name].dtype) for name, tensor in match.state.items()}
    model.load_state_dict(state)
    return {
        "file": path.name,
        "sha256": sha256(path),
        "tensors": len(match.state),
        "renamed": match.renamed,
        "kept_own": len(match.kept),
        "new": match.new,
        "match": match.summary(),
    }
