"""``compress reproduce seed``: the seed experiment, GhostNet against MobileNetV3-Large.

Both train from scratch with the seed's protocol (``--preset seed``: CIFAR-10, Adam 1e-3,
weight decay 1e-4, batch 128, 30 epochs); options given override it, so
``--dataset digits --epochs 3`` is a quick offline demo. The report (``report.md``,
``curves.png``) puts the measured numbers beside the seed's published ones: those bundled
in ``compress/reference/seed_published.json`` (as the seed review printed them, with the
caveats below), or ``--published FILE`` (JSON: ``{model: {row: value}}``, rows named as
in the report).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console

from compress import runs
from compress.errors import UsageError
from compress.plots import plot_compare
from compress.reports import comparison_rows
from compress.runner import RunOutcome, run

SEED_MODELS = ("ghostnet", "mobilenetv3_large")
BUNDLED = Path(__file__).parent / "reference" / "seed_published.json"
# What the seed's printed numbers mean; printed under every table that shows them.
SEED_CAVEATS = (
    "The seed's GhostNet is its own re-implementation, not the authors' network: 4,526,152 "
    "params and 186M Mult-Adds per 224x224 image (the faithful GhostNet 1.0x: 5,182,508 and 141M).",
    "torchinfo's Mult-Adds were summarised at batch 2, so per image they are half of what is "
    "printed (186M and 217M); the FLOPs row is the per-image Mult-Adds rounded, not 2 x MACs.",
    "The seed's memory row is torchinfo's estimated total size (input + activations + params), "
    "not a measured peak.",
    "The seed's cost rows were summarised at 224x224 while training used 32x32 images; its "
    "training ran 30 epochs on one Tesla P100.",
)


def read_published(path: str | None) -> dict[str, dict[str, str]]:
    """The seed's published numbers: the bundled ones, or ``path``'s."""
    if path is None:
        return runs.read_json(BUNDLED)
    if not Path(path).is_file():
        raise UsageError(f"--published {path} does not exist")
    published = runs.read_json(Path(path))
    if not isinstance(published, dict) or not all(isinstance(v, dict) for v in published.values()):
        raise UsageError(f"{path} must hold a JSON object {{model: {{row: value}}}}")
    return published


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = [" | ".join(header), " | ".join(["---"] * len(header))]
    lines += [" | ".join(cell.replace("|", "/") for cell in row) for row in rows]
    return "\n".join(f"| {line} |" for line in lines)


def reproduce_seed(
    out: Path, options: dict[str, Any], console: Console, published: dict[str, dict[str, str]]
) -> Path:
    """Train both models, then write ``report.md`` and ``curves.png`` in ``out``."""
    outcomes = [
        run("baseline", out / "runs", "seed", console, model=model, **options)
        for model in SEED_MODELS
    ]
    return write_seed_report(out, outcomes, published)


def write_seed_report(
    out: Path, outcomes: list[RunOutcome], published: dict[str, dict[str, str]]
) -> Path:
    """``report.md``, ``comparison.csv`` and ``curves.png`` in ``out``: the runs of
    ``SEED_MODELS`` measured, each beside its ``published`` column."""
    out.mkdir(parents=True, exist_ok=True)
    measured = [outcome.metrics for outcome in outcomes]
    plot_compare([(m["label"], m["history"]) for m in measured], out / "curves.png")
    header, rows = [""], []
    for model in SEED_MODELS:
        header += [f"{model} (measured)", f"{model} (seed)"]
    for label, *cells in comparison_rows(measured):
        row = [label]
        for model, cell in zip(SEED_MODELS, cells, strict=True):
            row += [cell, published.get(model, {}).get(label, "-")]
        rows.append(row)
    config = runs.read_json(outcomes[0].run_dir / runs.CONFIG)
    protocol = {**config["data"], **config["train"]}
    links = "\n".join(
        f"- {o.metrics['label']}: [{o.run_dir.name}](runs/{o.run_dir.name}) "
        f"![accuracy](runs/{o.run_dir.name}/accuracy.png) ![loss](runs/{o.run_dir.name}/loss.png)"
        for o in outcomes
    )
    caveats = "\n".join(f"- {caveat}" for caveat in SEED_CAVEATS)
    report = f"""# The seed experiment, reproduced

GhostNet against MobileNetV3-Large, trained from scratch with the same protocol.
val is the held-out test split. The seed column holds the seed review's published
numbers, as printed.

Protocol: `{json.dumps(protocol, sort_keys=True)}`

{markdown_table(header, rows)}

Caveats of the seed column:
{caveats}

![curves: dashed train, solid val](curves.png)

{links}
"""
    path = out / "report.md"
    runs.atomic_write(path, lambda tmp: tmp.write_text(report))
    table = [dict(zip(header, row, strict=True)) for row in rows]
    runs.write_csv(out / "comparison.csv", table, header)
    return path
