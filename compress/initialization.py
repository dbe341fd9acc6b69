"""``--init``: a run's network started from trained weights instead of at random.

The weights come from a run directory of the same network, from anyone's checkpoint
file (``compress.checkpoints``), or from timm's pretrained models. A builder may also
make its network from another network's trained weights (``Technique.made_from``): a
Ghost network from its plain backbone, whose convolutions it turns into Ghost modules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from compress.checkpoints import load_foreign
from compress.errors import UsageError
from compress.loading import RunLoadError, load_run
from compress.registry import TIMM_PREFIX, pretrained_model
from compress.spec import TechniqueUse
from compress.structure import fit_shapes
from compress.techniques import RunContext, get_technique


def initialize(
    model: nn.Module, builder: TechniqueUse, source: str, context: RunContext
) -> tuple[nn.Module, dict[str, Any]]:
    """``model`` (freshly built by ``builder``) with ``source``'s weights, or the network
    the builder makes from them; and where they came from, for the record."""
    if source.startswith(TIMM_PREFIX):
        return model, _from_timm(model, source)
    made_from = builder.technique.made_from(builder.options)
    path = Path(source)
    if path.is_file():
        try:
            return model, load_foreign(model, path)
        except UsageError:
            if made_from is None:
                raise
        name, options = made_from
        trained = _built(name, options, context)
        return _made(builder, trained, load_foreign(trained, path), context)
    if not path.is_dir():
        raise UsageError(f"--init {source}: no such checkpoint file or run directory")
    try:
        loaded = load_run(path)
    except RunLoadError as error:
        raise UsageError(f"--init: {error}") from None
    theirs = loaded.spec.uses[0]
    record = {
        "run_dir": str(source),
        "label": loaded.metrics.get("label"),
        "final_val_acc": loaded.metrics.get("final_val_acc"),
    }
    if made_from is not None and (theirs.name, theirs.options) == made_from:
        return _made(builder, loaded.model.train(), record, context)
    if (theirs.name, theirs.options) != (builder.name, builder.options):
        raise UsageError(
            f"--init {source} trained {theirs.technique.label(theirs.options)}, "
            f"not {builder.technique.label(builder.options)}"
        )
    state = loaded.model.state_dict()
    try:
        fit_shapes(model, state)
        model.load_state_dict(state)
    except RuntimeError:
        raise UsageError(
            f"--init {source} is a {loaded.spec.name} run whose weights a fresh "
            f"{builder.name} network cannot take (quantized?): start from its backbone's run"
        ) from None
    return model, record


def _from_timm(model: nn.Module, source: str) -> dict[str, Any]:
    """timm's pretrained weights in every tensor whose name and shape match (a new
    classifier keeps its initialisation)."""
    pretrained = pretrained_model(source).state_dict()
    own = model.state_dict()
    fitting = {k: v for k, v in pretrained.items() if k in own and own[k].shape == v.shape}
    if len(fitting) < len(own) / 2:
        raise UsageError(
            f"--init {source}: only {len(fitting)} of the network's {len(own)} tensors "
            "match its weights by name and shape; pick the timm model this network mirrors"
        )
    model.load_state_dict(fitting, strict=False)
    return {"timm": source, "tensors": len(fitting), "new": sorted(set(own) - set(fitting))}


def _built(name: str, options: Any, context: RunContext) -> nn.Module:
    return get_technique(name).build_model(options, context.data.num_classes, context.input_size)


def _made(
    builder: TechniqueUse, trained: nn.Module, record: dict[str, Any], context: RunContext
) -> tuple[nn.Module, dict[str, Any]]:
    """The builder's network made from ``trained``; what making it did joins the record."""
    model, made = builder.technique.from_trained(builder.options, trained, context)
    return model, {**record, "made_from_trained": made}
