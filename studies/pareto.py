"""The Pareto front, and what a study shows: plot, CSV and JSON."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna

from studies.objectives import OBJECTIVES


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """Whether ``a`` is at least as good as ``b`` everywhere and better somewhere."""
    better = [x > y if d == "maximize" else x < y for x, y, d in zip(a, b, directions, strict=True)]
    worse = [x < y if d == "maximize" else x > y for x, y, d in zip(a, b, directions, strict=True)]
    return any(better) and not any(worse)


def pareto_front(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices of the points no other point dominates (brute force, O(n^2))."""
    return [
        i
        for i, p in enumerate(points)
        if not any(dominates(q, p, directions) for j, q in enumerate(points) if j != i)
    ]


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One flat record per finished trial (complete, failed, or pruned: refused before
    training): number, state, technique, options, objectives."""
    rows = []
    retried_as = {  # Optuna's retry of a trial whose worker died names the trial it repeats
        t.system_attrs["failed_trial"]: t for t in study.trials if "failed_trial" in t.system_attrs
    }
    for trial in study.trials:
        if not trial.state.is_finished():
            continue
        error = trial.user_attrs.get("error", "")
        if trial.number in retried_as:
            retry = retried_as[trial.number]
            error += f"; retried as trial {retry.number} ({retry.state.name.lower()})"
        row = {
            "trial": trial.number,
            "state": trial.state.name,
            "technique": trial.params.get("technique", ""),
            "options": {k: v for k, v in trial.params.items() if k != "technique"},
            "error": error,
        }
        row.update(trial.user_attrs.get("metrics", {}))
        rows.append(row)
    return rows


def export(rows: list[dict[str, Any]], directory: Path, objectives: Sequence[str]) -> list[Path]:
    """``trials.json`` and ``trials.csv`` (one column per objective) in ``directory``."""
    from compress.runs import write_csv, write_json

    json_path, csv_path = directory / "trials.json", directory / "trials.csv"
    write_json(json_path, rows)
    columns = ["trial", "state", "technique", "options", *objectives, "run_dir", "error"]
    write_csv(csv_path, rows, columns)
    return [json_path, csv_path]


def plot_axes(objectives: Sequence[str]) -> tuple[str, str]:
    """(x, y): accuracy up the side when it is an objective, the first cost along."""
    y = "accuracy" if "accuracy" in objectives else objectives[1]
    return next(o for o in objectives if o != y), y


def plot_fronts(
    rows: list[dict[str, Any]],
    baselines: list[dict[str, Any]],
    objectives: Sequence[str],
    directory: Path,
    title: str,
) -> list[Path]:
    """``pareto.png`` (the first cost) and ``pareto-<cost>.png`` for each other cost; for
    accuracy, BOPs too: every trial records them (a float network at 32 x 32 bits), so
    quantized trials show at their true cost even where the study did not optimise it."""
    x, y = plot_axes(objectives)
    costs = [x, *(o for o in objectives if o not in (x, y))]
    if y == "accuracy" and "bops" not in costs:
        costs.append("bops")
    paths = []
    for cost in costs:
        path = directory / ("pareto.png" if cost == x else f"pareto-{cost}.png")
        plot_front(rows, baselines, [cost, y], path, title)
        paths.append(path)
    return paths


def plot_front(
    rows: list[dict[str, Any]],
    baselines: list[dict[str, Any]],
    objectives: Sequence[str],
    path: Path,
    title: str,
) -> None:
    """Accuracy against the first cost (log axis), coloured by technique, the front of the
    two drawn, baselines marked. Other objective pairs are plotted the same way.

    Fixed margins, as for the training curves: ``tight_layout`` drew each figure once more
    (0.32 -> 0.21 s a plot on a CPU, and a study draws two or more)."""
    from compress.plots import new_figure
    from compress.runs import atomic_write

    x, y = plot_axes(objectives)
    figure = new_figure(figsize=(7, 5), dpi=100)
    axis = figure.subplots()
    figure.subplots_adjust(left=0.1, right=0.97, bottom=0.11, top=0.93)
    done = [r for r in rows if r["state"] == "COMPLETE"]
    for technique in sorted({r["technique"] for r in done}):
        chosen = [r for r in done if r["technique"] == technique]
        axis.scatter([r[x] for r in chosen], [r[y] for r in chosen], label=technique)
    directions = [OBJECTIVES[x].direction, OBJECTIVES[y].direction]
    everything = [(r[x], r[y]) for r in [*done, *baselines]]  # the front of all that is drawn
    points = sorted(everything[i] for i in pareto_front(everything, directions))
    if points:
        axis.step(*zip(*points, strict=True), where="post", color="black", lw=1, label="front")
    for baseline in baselines:
        axis.scatter(baseline[x], baseline[y], marker="*", s=160, color="grey")
        axis.annotate(baseline["model"], (baseline[x], baseline[y]), fontsize=8)
    axis.set(xlabel=OBJECTIVES[x].label, ylabel=OBJECTIVES[y].label, title=title)
    axis.set_xscale("log")
    axis.grid(alpha=0.3)
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize=8)
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))
