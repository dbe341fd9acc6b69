"""What a study can optimise: one ``Objective`` record each, declared once.

An objective names the run metric it reads, its direction, its label (axis, column, the
name Optuna's dashboards show) and how a value reads in a table. The CLI's choices, the
study's directions, the Pareto table's columns, the plot's axes and the export all come
from here: adding an objective is adding a record to ``OBJECTIVES``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress import runs
from compress.deploy import export_run
from compress.reports import Formatter, percent, scaled


def milliseconds(value: Any, _metrics: Mapping[str, Any]) -> str:
    return f"{value:.2f} ms"


@dataclass(frozen=True)
class Objective:
    name: str
    key: str  # where the run's metrics hold it
    direction: str  # "maximize" or "minimize"
    label: str
    help: str
    cell: Formatter = scaled
    # The value when the run did not record ``key`` (e.g. BOPs of a float network).
    fallback: Callable[[Mapping[str, Any]], float] | None = None
    # Measures the value on the finished run (its directory) when no run records it:
    # an objective with one costs time, so only studies that choose it pay.
    measure: Callable[[Path], float] | None = None
    # A wall-clock time: anything else the machine runs moves it, other trials included.
    timed: bool = False

    def value(self, metrics: Mapping[str, Any], run_dir: Path | None = None) -> float:
        if self.key in metrics:
            return float(metrics[self.key])
        if self.fallback is not None:
            return float(self.fallback(metrics))
        if self.measure is not None and run_dir is not None:
            return self.measure(run_dir)
        raise KeyError(self.key)


def ort_latency_ms(run_dir: Path) -> float:
    """Batch-1 latency of the run's ONNX export in ONNX Runtime (1 thread), recorded in
    the run's metrics with the export's check."""
    result = export_run(run_dir, batch=1, repeats=30)
    runs.update_metrics(run_dir, {"exports": {"onnx": result}})
    return result["ort_latency_ms"]["1"]


OBJECTIVES: dict[str, Objective] = {
    objective.name: objective
    for objective in (
        Objective("accuracy", "final_val_acc", "maximize", "top-1 (test split)", "top-1", percent),
        Objective("macs", "macs", "minimize", "MACs", "multiply-accumulates per image"),
        Objective("params", "params", "minimize", "params", "the network's parameters"),
        Objective(
            "bops",
            "bops",
            "minimize",
            "BOPs",
            "MACs x weight bits x input bits (fp32: x 32 x 32)",
            fallback=lambda metrics: metrics["macs"] * 32 * 32,
        ),
        Objective(
            "latency",
            "latency_ms",
            "minimize",
            "latency (ms, batch 1)",
            "batch-1 latency as each trial measured it",
            milliseconds,
            timed=True,
        ),
        Objective(
            "ort_latency",
            "ort_latency_ms",
            "minimize",
            "ONNX Runtime latency (ms, batch 1)",
            "batch-1 latency of the ONNX export in ONNX Runtime, 1 thread",
            milliseconds,
            measure=ort_latency_ms,
            timed=True,
        ),
    )
}


def recorded(
    metrics: Mapping[str, Any], run_dir: Path, chosen: tuple[str, ...]
) -> dict[str, float]:
    """Every objective a run recorded, and the ``chosen`` ones measured if it did not."""
    return {
        name: objective.value(metrics, run_dir)
        for name, objective in OBJECTIVES.items()
        if objective.key in metrics or objective.fallback or name in chosen
    }


def objectives_help() -> str:
    return "; ".join(f"{o.name}: {o.help} ({o.direction[:3]})" for o in OBJECTIVES.values())
