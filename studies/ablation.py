"""``compress study ablation``: the paper's Tables 2-4, trained and counted here.

Every (s, d) point of the grid ghostifies the backbone (all convs but the first), trains
it with the same data and recipe, and is printed with its exact params and MACs next to
the numbers the paper prints for it. The plain backbone is trained first, as the tables'
reference row. Params and MACs are counted exactly; accuracy is what this run measures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from compress.errors import UsageError
from compress.options import Options, option
from compress.registry import get_entry, models_of
from compress.runner import run
from compress.runs import write_csv, write_json
from compress.spec import PRESETS
from compress.techniques.ghost import D_HELP, S_HELP
from ghost.module import check_ghost_options


def ghost_versions() -> dict[str, str]:
    """Each plain backbone that a registered Ghost model is the Ghost version of (its
    reference), with that model: vgg16 -> ghost_vgg16, resnet56 -> ghost_resnet56 ..."""
    versions = {}
    for name in models_of("ghost"):
        reference = get_entry(name).reference
        if reference is not None:
            versions[reference] = name
    return versions


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


@dataclass
class AblationOptions(Options):
    """Which grid: a plain backbone with a Ghost version, and the s and d values."""

    backbone: str = option(
        "vgg16", "a backbone with a Ghost version", choices=tuple(sorted(ghost_versions()))
    )
    s: tuple[int, ...] = option((2, 3, 4, 5), f"{S_HELP}: the values tried", low=2)
    d: tuple[int, ...] = option((1, 3, 5, 7), f"{D_HELP}: the values tried", low=1)
    preset: str | None = option(
        None, "a protocol (paper: the paper's CIFAR-10 recipe, 164 epochs)", choices=tuple(PRESETS)
    )
    out: str = option("runs/studies", "results root (the grid goes to OUT/ablation-BACKBONE)")

    def check(self) -> None:
        """Every point valid before any training starts."""
        if not self.s or not self.d:
            raise UsageError("give at least one value for --s and for --d")
        for s in self.s:
            for d in self.d:
                try:
                    check_ghost_options(s, d)
                except ValueError as error:
                    raise UsageError(str(error)) from None

    @property
    def directory(self) -> Path:
        return Path(self.out) / f"ablation-{self.backbone}"


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
    options: AblationOptions, fixed: dict[str, Any], console: Console
) -> list[dict[str, Any]]:
    """Train the plain backbone and every (s, d) point with the same data and recipe
    (``fixed``); one row each."""
    runs_dir = options.directory / "runs"
    backbone, ghost = options.backbone, ghost_versions()[options.backbone]
    points: list[tuple[int | None, int | None]] = [(None, None)]
    points += [(s, d) for s in options.s for d in options.d]
    rows = []
    for s, d in points:
        console.print(backbone if s is None else f"{ghost} s={s} d={d}", style="bold")
        if s is None:
            outcome = run("baseline", runs_dir, options.preset, console, model=backbone, **fixed)
        else:
            outcome = run(
                "ghost", runs_dir, options.preset, console, model=ghost, s=s, d=d, **fixed
            )
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
