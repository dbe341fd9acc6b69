"""The technique interface and its registry.

A technique is a class with a config dataclass (its options, declared once) and the
stage it acts in. Techniques compose in stage order, ``build`` first:

- ``build``: make the network (``baseline``, ``ghost``); a run has exactly one.
- ``transform``: change it before training (e.g. quantization-aware layers).
- ``train``: add a training term to the loss (e.g. distillation).
- ``post``: act on the trained network (e.g. prune, then fine-tune).

After training, every technique's ``post_train`` runs, in ``post_order``: that is how
quantization follows pruning. A technique keeps nothing on ``self``: what it learns
while a run goes on is that run's, in the ``RunContext`` (``metrics``, the training
term it returns). Packages outside this repository add techniques through the
``compress.techniques`` entry-point group; each entry point names a ``Technique`` subclass.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, ClassVar

import torch
from rich.console import Console
from torch import nn

from compress.data import Dataset, loader, normalization, prepare
from compress.engine import TrainConfig, train
from compress.errors import UsageError
from compress.options import Options
from compress.reports import MetricRow

STAGES = ("build", "transform", "train", "post")
ENTRY_POINT_GROUP = "compress.techniques"
_TECHNIQUES: dict[str, type[Technique]] = {}
_BUILTIN = (
    "compress.techniques.baseline",
    "compress.techniques.ghost",
    "compress.techniques.distill",
    "compress.techniques.prune",
    "compress.techniques.quantize",
)
_loaded = False


@dataclass
class RunContext:
    """What a technique may use besides its own options, for one run.

    ``history`` is the run's list of epoch records. Training after the main run (e.g.
    fine-tuning after pruning) goes through ``train_more`` so that its epochs land there
    too, and a technique that changes the network outside training says so with
    ``network_changed``: the run's best top-1 then counts only epochs of the delivered
    net. ``metrics`` takes what a technique learns while it acts (e.g. the MACs before
    pruning); it lands in the run's metrics.json.
    """

    data: Dataset
    train: TrainConfig
    console: Console
    history: list[dict[str, Any]] = field(default_factory=list)
    delivered_from: int | None = 0  # first history record that describes the final network
    metrics: dict[str, Any] = field(default_factory=dict)
    # Why no training step of this run can be one CUDA graph (from its techniques).
    graph_obstacles: list[str] = field(default_factory=list)
    # ``trained_alone(model, recipe)``: that registered model trained on this data with
    # ``recipe``, once (the runner caches it for later runs). Set by the runner.
    trained_alone: Callable[[str, TrainConfig], nn.Module] | None = None
    label: str = ""  # the run's, on its progress lines

    def network_changed(self) -> None:
        """The network is no longer the one the last epoch records describe."""
        self.delivered_from = None

    def train_more(self, model: nn.Module, recipe: TrainConfig, phase: str) -> None:
        """Train ``model`` with ``recipe``; its epochs continue the run's history."""
        start = len(self.history)
        state = train(
            model,
            self.data,
            recipe,
            console=self.console,
            phase=phase,
            graph_obstacles=self.graph_obstacles,
            label=self.label,
        )
        for offset, record in enumerate(state.history):
            self.history.append({**record, "epoch": start + offset + 1})
        if self.delivered_from is None:
            self.delivered_from = start

    @property
    def input_size(self) -> int:
        """The side of the network's input: ``--input-size``, else the images' own."""
        return self.train.input_size or self.data.image_size

    def example(self, device: torch.device) -> torch.Tensor:
        """One zero input, for tracing and counting."""
        return torch.zeros(1, 3, self.input_size, self.input_size, device=device)

    def training_batches(
        self, device: torch.device, count: int, batch_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The first ``count`` training batches, normalised and resized, not augmented."""
        mean, std = normalization(self.data, device)
        first = min(len(self.data.train_x), count * batch_size)
        images, labels = self.data.train_x[:first], self.data.train_y[:first]
        for batch, batch_labels in loader(images, labels, batch_size, device, train=False):
            yield prepare(batch, mean, std, self.input_size), batch_labels


class TrainingTerm:
    """What a ``train``-stage technique adds to a run's loss, and undoes afterwards."""

    def __call__(
        self, inputs: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, task: torch.Tensor
    ) -> torch.Tensor:
        """The loss of one step, built on ``task`` (the cross-entropy on the labels)."""
        raise NotImplementedError

    def release(self, model: nn.Module) -> nn.Module:
        """After training: the network without the term's helpers (hooks, adapters)."""
        return model


class Technique:
    """Base class: subclasses set ``config_cls`` and ``stage`` and override that stage.

    Every hook takes the technique's config (an instance of ``config_cls``) and the run's
    ``RunContext``; per-run state goes there, never on ``self``.
    """

    name: ClassVar[str]
    config_cls: ClassVar[type[Options]]
    stage: ClassVar[str]
    summary: ClassVar[str] = ""
    restructures: ClassVar[bool] = False  # changes layer shapes after training (pruning)
    post_order: ClassVar[int] = 0  # ``post_train`` runs in this order (ties: stage order)
    metric_rows: ClassVar[tuple[MetricRow, ...]] = ()  # what ``report`` adds, for tables

    def build_model(self, config: Any, num_classes: int, image_size: int) -> nn.Module:
        """``build``: the network to train.

        Args:
            config: the technique's options.
            num_classes: the data set's classes.
            image_size: the side of the network's input.

        Returns:
            A freshly initialised ``nn.Module``.
        """
        raise NotImplementedError

    def made_from(self, config: Any) -> tuple[str, Options] | None:
        """``build``: the builder and options of another network whose trained weights
        ``from_trained`` turns into this one (``--init`` with that network's weights);
        None when only this network's own weights start it."""
        return None

    def from_trained(
        self, config: Any, trained: nn.Module, context: RunContext
    ) -> tuple[nn.Module, dict[str, Any]]:
        """``build``: this network made from ``trained``, the network ``made_from`` names
        with its trained weights (which it may change in place).

        Returns:
            The network, and what making it did (for the run's record).
        """
        raise NotImplementedError

    def on_backbone(self, backbone: str) -> dict[str, Any]:
        """The options that make this technique act on ``backbone`` (a registered model
        name): a builder builds it, the others need nothing. Studies wire it in so."""
        return {}

    def transform(self, model: nn.Module, config: Any, context: RunContext) -> nn.Module:
        """``transform``: before training.

        Returns:
            The network to train instead of ``model`` (which it may change in place).
        """
        raise NotImplementedError

    def loss_term(self, model: nn.Module, config: Any, context: RunContext) -> TrainingTerm:
        """``train``: set up what this technique adds to the loss.

        Returns:
            A ``TrainingTerm``, called at every step and released after training.
        """
        raise NotImplementedError

    def post_train(self, model: nn.Module, config: Any, context: RunContext) -> nn.Module:
        """After training, whatever the stage (a ``post`` technique's main hook).

        Returns:
            The network to deliver, made from the trained ``model``.
        """
        return model

    def report(self, model: nn.Module, config: Any, context: RunContext) -> dict[str, Any]:
        """Numbers this technique adds to metrics.json for the delivered ``model``; each
        key it shows in tables has a row in ``metric_rows``."""
        return {}

    def changes_training(self, config: Any) -> bool:
        """Whether the technique acts before or during training (then a run cannot start
        from a shared trained backbone); post-training techniques do not."""
        return self.stage in ("transform", "train")

    def graph_obstacle(self, config: Any) -> str | None:
        """Why a training step with this technique cannot be captured as one CUDA graph,
        or None when it can."""
        return None

    def restore(self, model: nn.Module, config: Any, record: dict[str, Any]) -> nn.Module:
        """Loading a finished run: give the freshly built network the structure this
        technique gave it (e.g. quantizers), from the run's ``record`` (its metrics),
        without training. Pruned widths come from the saved weights."""
        return model

    def training_state(self, model: nn.Module) -> dict[str, Any]:
        """What this technique keeps in ``model`` outside its ``state_dict`` that training
        needs to continue exactly (e.g. quantizers still collecting statistics); saved
        with each checkpoint (tensors, numbers, dicts: loaded with ``weights_only``)."""
        return {}

    def restore_training_state(self, model: nn.Module, state: dict[str, Any]) -> None:
        """``--resume``: put back what ``training_state`` saved, after the weights load."""

    def check_model(self, model: nn.Module, config: Any, context: RunContext) -> None:
        """Refuse, with a UsageError, a network this technique cannot act on; runs on the
        freshly built network, before the run directory exists or training starts."""

    def check_composition(self, config: Any, others: list[Technique]) -> None:
        """Refuse, with a UsageError, options that the other techniques of a run rule out."""

    def auxiliary_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """Parameters the technique adds that are not the network's (e.g. quantizer
        scales): counted apart from the network's params."""
        return []

    def onnx_exporter(self, config: Any) -> Callable[..., None] | None:
        """How a network this technique changed is written as ONNX, called as
        ``exporter(model, example, path, **torch_onnx_options)``; None: plain
        ``torch.onnx.export`` serves (the network is ordinary float modules)."""
        return None

    def reference_model(self, config: Any) -> str | None:
        """Registry name of the uncompressed model this result should be read against."""
        return None

    def label(self, config: Any) -> str:
        """Short name of the result, for tables and run directories."""
        return self.name


def register_technique(name: str) -> Callable[[type[Technique]], type[Technique]]:
    """Class decorator: make a ``Technique`` subclass available as ``compress run NAME``."""

    def decorator(cls: type[Technique]) -> type[Technique]:
        if name in _TECHNIQUES and _TECHNIQUES[name] is not cls:
            raise RuntimeError(f"technique {name!r} is registered twice")
        if getattr(cls, "stage", None) not in STAGES:
            raise RuntimeError(f"technique {name!r} needs a stage among {', '.join(STAGES)}")
        cls.name = name
        _TECHNIQUES[name] = cls
        return cls

    return decorator


def _load() -> None:
    """Built-in techniques, then those that installed packages declare as entry points."""
    global _loaded
    if _loaded:
        return
    for module in _BUILTIN:
        importlib.import_module(module)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        cls = entry.load()
        if entry.name not in _TECHNIQUES:
            register_technique(entry.name)(cls)
    _loaded = True  # not before: an import that failed (or was interrupted) is tried again


def list_techniques() -> list[str]:
    _load()
    return sorted(_TECHNIQUES)


def get_technique(name: str) -> Technique:
    _load()
    if name not in _TECHNIQUES:
        near = difflib.get_close_matches(name, list(_TECHNIQUES), n=2)
        hint = f"; did you mean {' or '.join(near)}?" if near else ""
        raise UsageError(
            f"unknown technique {name!r}{hint} (choose from {', '.join(sorted(_TECHNIQUES))})"
        )
    return _TECHNIQUES[name]()


def parse_composition(spec: str) -> list[str]:
    """``"ghost+prune"`` -> technique names in stage order, with ``baseline`` added when
    nothing builds the model; exactly one builder, no repeats."""
    names = [part.strip() for part in spec.split("+")]
    if any(not name for name in names):
        raise UsageError(f"bad technique list {spec!r}: use names joined by '+'")
    if len(set(names)) != len(names):
        raise UsageError(f"technique list {spec!r} repeats a technique")
    techniques = [get_technique(name) for name in names]
    builders = [t.name for t in techniques if t.stage == "build"]
    if len(builders) > 1:
        raise UsageError(f"{' and '.join(builders)} both build the model; keep one")
    if not builders:
        techniques.insert(0, get_technique("baseline"))
    techniques.sort(key=lambda t: STAGES.index(t.stage))
    return [t.name for t in techniques]
