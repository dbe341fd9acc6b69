"""``compress reproduce seed``: the seed experiment, GhostNet against MobileNetV3-Large.

Both train from scratch with the seed's protocol (``--preset seed``: CIFAR-10, Adam 1e-3,
weight decay 1e-4, batch 128, 30 epochs); options given override it, so
``--dataset digits --epochs 3`` is a quick offline demo. The report (``report.md``,
``curves.png``) puts the measured numbers beside the seed's published ones, read from
``--published FILE`` (JSON: ``{model: {row: value}}``, rows named as in the report).
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
from compress.runner import run

SEED_MODELS = ("ghostnet", "mobilenetv3_large")


def read_published(path: str | None) -> dict[str, dict[str, str]]:
    if path is None:
        return {}
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
    source = (
        "The seed column holds the seed's published numbers."
        if published
        else "The seed's published numbers are not bundled: pass `--published FILE` "
        "(JSON `{model: {row: value}}`) to print them in the seed column."
    )
    report = f"""# The seed experiment, reproduced

GhostNet against MobileNetV3-Large, trained from scratch with the same protocol.
val is the held-out test split. {source}

Protocol: `{json.dumps(protocol, sort_keys=True)}`

{markdown_table(header, rows)}

![curves: dashed train, solid val](curves.png)

{links}
"""
    path = out / "report.md"
    runs.atomic_write(path, lambda tmp: tmp.write_text(report))
    return path
