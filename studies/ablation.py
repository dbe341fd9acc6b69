"""``compress study ablation``: the paper's Tables 2-4, trained and counted here.

Every (s, d) point of the grid ghostifies the backbone (all convs but the first), trains
it with the same data and recipe, and is printed with its exact params and MACs next to
the numbers the paper prints for it. The plain backbone is trained first, as the tables'
reference row. Params and MACs are counted exactly; accuracy is what this run measures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from compress.errors import UsageError
from compress.runner import run
from compress.runs import write_csv, write_json
from ghost.module import check_ghost_options

GHOST_BACKBONES = {"vgg16": "ghost_vgg16", "resnet56": "ghost_resnet56"}

# CIFAR-10 as printed in the paper: (backbone, s, d) -> (params in M, MACs in M, top-1 %).
# (s, d) = (None, None) is the plain backbone. Table 2 varies d at s = 2, Table 3 varies
# s at d = 3, and Table 4 gives Ghost-ResNet-56 (s = 2, d = 3).
PAPER: dict[tuple[str, int | None, int | None], tuple[float, float, float]] = {
    ("vgg16", None, None): (15.0, 313, 93.6),
    ("vgg16", 2, 1): (7.6, 157, 93.5),
    ("vgg16", 2, 3): (7.7, 158, 93.7),
    ("vgg16", 2, 5): (7.7, 160, 93.4),
    ("vgg16", 2, 7): (7.7, 163, 93.1),
    ("vgg16", 3, 3): (5.2, 107, 93.4),
    ("vgg16", 4, 3): (4.0, 80, 93.0),
    ("vgg16", 5, 3): (3.3, 65, 92.9),
    ("resnet56", None, None): (0.85, 125, 93.0),
    ("resnet56", 2, 3): (0.43, 63, 92.7),
}
PAPER_COLUMNS = ["paper_params_m", "paper_macs_m", "paper_top1_pct"]
COLUMNS = ["s", "d", "params", "macs", "accuracy", *PAPER_COLUMNS]


def check_grid(backbone: str, s_values: list[int], d_values: list[int]) -> None:
    """Every point valid before any training starts."""
    if backbone not in GHOST_BACKBONES:
        raise UsageError(f"--backbone must be one of {', '.join(GHOST_BACKBONES)}")
    if not s_values or not d_values:
        raise UsageError("give at least one value for --s and for --d")
    for s in s_values:
        for d in d_values:
            try:
                check_ghost_options(s, d)
            except ValueError as error:
                raise UsageError(str(error)) from None


def _row(backbone: str, s: int | None, d: int | None, metrics: dict[str, Any]) -> dict[str, Any]:
    paper = PAPER.get((backbone, s, d), (None, None, None))
    return {
        "s": s,
        "d": d,
        "params": metrics["params"],
        "macs": metrics["macs"],
        "accuracy": metrics["final_val_acc"],
        **dict(zip(PAPER_COLUMNS, paper, strict=True)),
        "run_dir": metrics["run_dir"],
    }


def ablation(
    backbone: str,
    s_values: list[int],
    d_values: list[int],
    fixed: dict[str, Any],
    out: Path,
    console: Console,
    preset: str | None = None,
) -> list[dict[str, Any]]:
    """Train the plain backbone and every (s, d) point; one row each."""
    check_grid(backbone, s_values, d_values)
    runs_dir = out / "runs"
    points: list[tuple[int | None, int | None]] = [(None, None)]
    points += [(s, d) for s in s_values for d in d_values]
    rows = []
    for s, d in points:
        label = backbone if s is None else f"{GHOST_BACKBONES[backbone]} s={s} d={d}"
        console.print(label, style="bold", markup=False)
        if s is None:
            outcome = run("baseline", runs_dir, preset, console, model=backbone, **fixed)
        else:
            model = GHOST_BACKBONES[backbone]
            outcome = run("ghost", runs_dir, preset, console, model=model, s=s, d=d, **fixed)
        rows.append(_row(backbone, s, d, {**outcome.metrics, "run_dir": str(outcome.run_dir)}))
    return rows


def write_results(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out / "ablation.json", out / "ablation.csv"
    write_json(json_path, rows)
    write_csv(csv_path, rows, [*COLUMNS, "run_dir"])
    return [json_path, csv_path]


def ablation_table(backbone: str, rows: list[dict[str, Any]]) -> Table:
    """Measured beside printed: params, MACs and top-1 of each grid point."""

    def shown(value: float | None, form: str = "{}") -> str:
        return "-" if value is None else form.format(value)

    table = Table(title=f"Ghost-{backbone} ablation: measured here | as printed in the paper")
    for column in ("s", "d", "params", "MACs", "top-1", "paper params", "paper MACs", "paper"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            shown(row["s"]),
            shown(row["d"]),
            f"{row['params']:,}",
            f"{row['macs']:,}",
            f"{100 * row['accuracy']:.2f}%",
            shown(row["paper_params_m"], "{:g} M"),
            shown(row["paper_macs_m"], "{:g} M"),
            shown(row["paper_top1_pct"], "{:.1f}%"),
        )
    return table
