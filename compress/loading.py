"""Reload what a run delivered: ``load(RUN_DIR)`` is the trained network, in eval mode.

A run records what rebuilding its network needs: the techniques and their options
(``config.json``), the network's input (classes, size, normalisation) and what the
techniques decided while running (e.g. which quantized inputs are signed, in
``metrics.json``). Rebuilding never trains: the builder makes the network, pruned widths
are read from the saved weights, each technique restores its own structure (quantizers),
and the weights load strictly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from compress import runs
from compress.data import DATASET_CLASSES
from compress.errors import UsageError, first_line
from compress.spec import RunSpec
from compress.structure import fit_shapes

FORMAT = 1  # config.json's "format"; a newer one was written by a newer compress


class RunLoadError(UsageError):
    """A directory that cannot be loaded as a finished run, and why."""


@dataclass
class LoadedRun:
    """A finished run's network with what describes it."""

    model: nn.Module
    spec: RunSpec
    config: dict[str, Any]
    metrics: dict[str, Any]
    run_dir: Path

    @property
    def input(self) -> dict[str, Any]:
        """Classes, image and input size, normalisation: what feeding the network needs."""
        return self.config["input"]


def _read(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    if not run_dir.is_dir():
        raise RunLoadError(f"{run_dir} is not a directory")
    try:
        config = runs.read_json(run_dir / runs.CONFIG)
        metrics = runs.read_json(run_dir / runs.METRICS)
    except UsageError as error:
        raise RunLoadError(f"{run_dir} is not a run: {error}") from None
    if not isinstance(config, dict) or not isinstance(metrics, dict):
        raise RunLoadError(f"{run_dir} is not a run: its records are not JSON objects")
    version = config.get("format", 0)
    if not isinstance(version, int) or version > FORMAT:
        raise RunLoadError(
            f"{run_dir} was written in run format {version!r}, newer than this compress "
            f"reads ({FORMAT}): upgrade compress"
        )
    if metrics.get("status") != "completed":
        raise RunLoadError(
            f"{run_dir} did not complete (status {metrics.get('status')!r}): nothing to load"
        )
    return config, metrics


MAX_INPUT = 4096  # pixels a side; more is a damaged record, not a network's input


def _checked_input(record: Any, run_dir: Path) -> dict[str, Any]:
    """``config["input"]`` as a run writes it: classes, sizes, and three means and
    standard deviations (or none, in the oldest records)."""

    def count(key: str, low: int, high: int | None = None) -> bool:
        value = record.get(key)
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and low <= value
            and (high is None or value <= high)
        )

    def channels(key: str) -> bool:
        value = record.get(key)
        return value is None or (
            isinstance(value, list)
            and len(value) == 3
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
            and (key != "std" or min(value) > 0)
        )

    valid = isinstance(record, dict) and (
        count("num_classes", 1)
        and count("input_size", 8, MAX_INPUT)
        and count("image_size", 1, MAX_INPUT)
        and channels("mean")
        and channels("std")
    )
    if not valid:
        raise RunLoadError(
            f"{run_dir}/config.json is damaged: its input record {record!r} is not classes, "
            f"sizes (up to {MAX_INPUT}) and three means and positive stds"
        )
    return record


def _input_record(config: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """``config["input"]``, or what a run written before it was recorded implies."""
    if "input" in config:
        return config["input"]
    dataset = config.get("data", {}).get("dataset")
    return {
        "num_classes": DATASET_CLASSES.get(dataset, 10),
        "input_size": metrics.get("input_size", 32),
        "image_size": 32,
        "mean": None,
        "std": None,
    }


def load_run(run_dir: str | Path) -> LoadedRun:
    """The finished run in ``run_dir``, rebuilt; a ``RunLoadError`` says why not."""
    run_dir = Path(run_dir)
    config, metrics = _read(run_dir)
    try:
        spec = RunSpec.from_record(config)
    except UsageError as error:
        raise RunLoadError(f"{run_dir}: {error}") from None
    weights = run_dir / runs.WEIGHTS
    try:
        state = load_file(weights)
    except (OSError, SafetensorError) as error:
        raise RunLoadError(f"cannot read the weights {weights}: {error}") from None
    config["input"] = _checked_input(_input_record(config, metrics), run_dir)
    builder, *others = spec.uses
    model = builder.technique.build_model(
        builder.options, config["input"]["num_classes"], config["input"]["input_size"]
    )
    try:
        fit_shapes(model, state)
        for use in others:
            model = use.technique.restore(model, use.options, metrics)
        model.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as error:
        reason = first_line(error)
        raise RunLoadError(
            f"the weights in {run_dir} do not fit the network its config.json describes: {reason}"
        ) from None
    return LoadedRun(model.eval(), spec, config, metrics, run_dir)


def load(run_dir: str | Path) -> nn.Module:
    """The network a finished run delivered, with its final weights, in eval mode on the
    CPU: baseline, ghost, pruned (channels or weights), quantized or distilled.

    Args:
        run_dir: a run directory written by ``compress run`` (or ``compress.run``).

    Returns:
        The ``nn.Module``. Raises ``RunLoadError`` (a ``ValueError``) for a directory that
        is not a run, a run that did not complete, weights that do not fit its
        architecture, or a run written by a newer compress.
    """
    return load_run(run_dir).model
