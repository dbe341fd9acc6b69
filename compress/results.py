"""The results page: ``compress report PAGE SOURCE...`` rebuilds it from finished runs.

Each SOURCE directory (runs anywhere below it) becomes one section: a table of its runs,
the data, recipe, hardware, command and training time of each, their curves overlaid
(``PAGE/<section>.png``) and a CSV (``PAGE/<section>.csv``). What the command that made
the source wrote beside its runs comes along, copied to ``PAGE/<section>/``: its tables
(``*.csv``: the seed's comparison, an ablation's grid beside the paper, a study's front)
shown when short enough to read, and its figures (``*.png``: curves, the Pareto plot).
Every run's summary (its config and final metrics, no weights) is copied to
``PAGE/runs/<section>/<run>.json``, so each published number can be traced to a
committed record. The page is written whole or not at all.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from compress import runs
from compress.errors import UsageError, first_line
from compress.plots import plot_compare
from compress.reports import BUSY, MetricRow, percent, shown, top1
from compress.reproduce import markdown_table
from compress.significance import paired_change
from compress.spec import RunSpec, baseline_record
from compress.techniques import get_technique

# Keys of a run's config.json that say how it ran, in the order a reader wants them.
DATA_KEYS = ("dataset", "train_size", "test_size")
RECIPE_KEYS = ("epochs", "optimizer", "lr", "batch_size", "weight_decay", "precise_bn")
# A source's own tables: shown on the page up to this many rows (all are linked), without
# the columns that only make sense on the machine that ran them.
SHOWN_ROWS = 20
HIDDEN_COLUMNS = ("run_dir", "error")


def _millions(value: Any, _metrics: Mapping[str, Any]) -> str:
    return f"{value / 1e6:.3f} M" if value >= 1e5 else f"{value:,}"


def _minutes(value: Any, metrics: Mapping[str, Any]) -> str:
    """Training and post-training (fine-tuning, calibration) together."""
    return f"{(value + (metrics.get('post_time_s') or 0)) / 60:.1f} min"


def _epochs(value: Any, metrics: Mapping[str, Any]) -> str:
    return str(len(metrics.get("history", [])))


def images_seen(metrics: Mapping[str, Any]) -> int:
    """Training images the run's steps saw, over every phase (training, fine-tuning, QAT)."""
    return sum(
        record.get("images") or round(record["images_per_s"] * record["time_s"])
        for record in metrics.get("history", [])
    )


def _images(value: Any, metrics: Mapping[str, Any]) -> str:
    return f"{images_seen(metrics):,}"


def _bits(value: Any, _metrics: Mapping[str, Any]) -> str:
    return f"{value / 8 / 1024:,.1f} KiB"


def _ort_batch1(value: Any, _metrics: Mapping[str, Any]) -> str:
    onnx = value.get("onnx", {})
    ms = onnx.get("ort_latency_ms", {}).get("1")
    others = onnx.get("cpu_used_by_others")
    busy = f", busy: {100 * others:.0f}% of CPU" if others is not None and others > BUSY else ""
    return "n/a" if ms is None else f"{ms:.2f} ms ({onnx.get('threads')} thr{busy})"


COLUMNS = (
    MetricRow("params", "params", _millions),
    MetricRow("nonzero_params", "non-zero params", _millions),
    MetricRow("macs", "MACs", _millions),
    MetricRow("bops", "BOPs", _millions),
    MetricRow("weight_size_bits", "quantized weights", _bits, optional=True),
    MetricRow("exports", "ONNX Runtime, batch 1", _ort_batch1, optional=True),
    MetricRow("init_val_acc", "top-1 before training (as started)", percent, optional=True),
    MetricRow("final_val_acc", "top-1 (final) [95% interval]", top1),
    MetricRow("best_val_acc", "top-1 (best epoch)", percent),
    MetricRow("history", "epochs", _epochs),
    MetricRow("history", "images trained on", _images),
    MetricRow("train_time_s", "time (train + post)", _minutes),
)
CHANGE = "change from the trained network (McNemar p)"
MAX_CURVES = 12  # runs whose curves one figure can show legibly


@dataclass
class FinishedRun:
    run_dir: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    page_name: str | None = None  # the name a page gave it, read back from its summary

    @property
    def options(self) -> str:
        """Each technique with the options it was given that differ from its defaults."""
        parts = []
        for use in self.config.get("techniques", []):
            defaults = _defaults(use["name"])
            shown = ", ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"  # a study's draws
                for k, v in use.get("options", {}).items()
                if defaults.get(k) != v
            )
            parts.append(f"{use['name']}({shown})" if shown else use["name"])
        return " + ".join(parts)

    def name(self, source: Path) -> str:
        """How the page names the run: the folder it was made in under ``source`` (a
        campaign's row), else its label."""
        if self.page_name:
            return self.page_name
        folder = self.run_dir.parent
        return (
            folder.name
            if folder != source and folder.is_relative_to(source)
            else (self.metrics["label"])
        )

    @property
    def command(self) -> str:
        argv = self.config.get("argv", [])
        words = ["compress", *argv[1:]] if argv else []
        return " ".join(words)

    def summary(self, source: Path) -> dict[str, Any]:
        """What the page rests on: the run's name on it, the config, and the metrics with
        their epoch history, with this machine's absolute paths made relative to the
        working directory (where a reader rebuilds the page) and the program path
        reduced to ``compress``."""
        config = portable(self.config, Path.cwd())
        if config.get("argv"):
            config["argv"] = ["compress", *config["argv"][1:]]
        metrics = portable(self.metrics, Path.cwd())
        return {"name": self.name(source), "config": config, "metrics": metrics}


def portable(value: Any, base: Path) -> Any:
    """``value`` (JSON) with every absolute path under ``base`` written relative to it."""
    if isinstance(value, dict):
        return {key: portable(item, base) for key, item in value.items()}
    if isinstance(value, list):
        return [portable(item, base) for item in value]
    if isinstance(value, str) and value.startswith("/") and Path(value).is_relative_to(base):
        return str(Path(value).relative_to(base))
    return value


def _defaults(technique: str) -> dict[str, Any]:
    try:
        config_cls = get_technique(technique).config_cls
    except UsageError:  # a plugin this installation lacks: show every option
        return {}
    return {f.name: f.default for f in fields(config_cls)}


def finished_runs(source: Path) -> list[FinishedRun]:
    """Completed runs anywhere under ``source`` (a run directory counts too), oldest first."""
    if not source.is_dir():
        raise UsageError(f"{source} is not a directory")
    found = []
    for config_path in sorted(source.rglob(runs.CONFIG)):
        run_dir = config_path.parent
        if not (run_dir / runs.METRICS).is_file():
            continue
        metrics = runs.read_metrics(run_dir)
        if isinstance(metrics, dict) and metrics.get("status") == "completed":
            found.append(_readable(FinishedRun(run_dir, runs.read_json(config_path), metrics)))
    if not found:
        raise UsageError(f"{source} holds no completed run")
    return sorted(found, key=lambda run: run.config.get("created", ""))


def run_names(found: Sequence[FinishedRun], source: Path) -> list[str]:
    """Each run's name in its section, told apart: runs that share one (three kinds of
    distillation into the same ResNet-20) add the options that make them differ."""
    names = [run.name(source) for run in found]
    shared = {name for name in names if names.count(name) > 1}
    named = [
        f"{name} ({run.options})" if name in shared else name
        for name, run in zip(names, found, strict=True)
    ]
    return [
        f"{name} [{run.run_dir.name}]" if named.count(name) > 1 else name
        for name, run in zip(named, found, strict=True)
    ]


def trained_reference(run: FinishedRun, found: Sequence[FinishedRun]) -> FinishedRun | None:
    """The run in ``found`` that is ``run``'s network as trained elsewhere and loaded
    (``--init``, no epoch): a baseline of the model ``run`` compresses."""
    try:
        builder = RunSpec.from_record(run.config).uses[0]
    except UsageError:
        return None
    model = builder.technique.reference_model(builder.options)
    for candidate in found:
        train = candidate.config.get("train", {})
        if (
            candidate.config.get("techniques") == baseline_record(model)
            and train.get("init")
            and train.get("epochs") == 0
        ):
            return candidate
    return None


def _readable(run: FinishedRun) -> FinishedRun:
    """``run`` if the page can show what its records say; a UsageError naming the run
    and what is wrong (a hand-edited or damaged record) before anything is written."""
    try:
        if not isinstance(run.config, dict):
            raise TypeError("config.json is not an object")
        for cell in (*(c.cell(run.metrics) for c in COLUMNS), run.options, run.command):
            str(cell)
        _protocol([run])
        float(run.metrics.get("train_time_s") or 0) + float(run.metrics.get("post_time_s") or 0)
        runs.dumps(run.summary(run.run_dir.parent))
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        raise UsageError(
            f"{run.run_dir}: its records do not read as a run's "
            f"({type(error).__name__}: {first_line(error)})"
        ) from None
    return run


def section_name(source: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", source.resolve().name).strip("-.")
    return name or "runs"


def _protocol(found: Sequence[FinishedRun]) -> list[str]:
    """One line each for the data and the recipe: shared by the section, or per run."""
    lines = []
    for title, part, keys in (("data", "data", DATA_KEYS), ("recipe", "train", RECIPE_KEYS)):
        values = {
            json.dumps({k: v for k, v in run.config.get(part, {}).items() if k in keys})
            for run in found
        }
        shown = "; ".join(sorted(values))
        lines.append(f"- {title}: `{shown}`")
    classes = {json.dumps(run.config.get("input", {}).get("classes")) for run in found}
    if len(classes) == 1 and (names := json.loads(classes.pop())):
        lines.append(f"- classes: {', '.join(names)}")
    started = sum(bool(run.config.get("train", {}).get("init")) for run in found)
    if started:  # each summary names the run its weights came from
        lines.append(f"- {started} of {len(found)} runs started from trained weights (`init`)")
    return lines


def _cell(text: str) -> str:
    """A CSV cell as the page shows it: integers with separators, anything else as written
    (its producer chose the digits)."""
    return f"{int(text):,}" if text.isdigit() else text


def _published(path: Path) -> bytes:
    """A source's file as the page keeps it: a table without the columns that only make
    sense on the machine that ran it (``run_dir``), a figure as it is."""
    if path.suffix != ".csv":
        return path.read_bytes()
    header, rows = _read_table(path)
    keep = [i for i, column in enumerate(header) if column != "run_dir"]
    table = io.StringIO()
    csv.writer(table, lineterminator="\n").writerows(
        [[row[i] for i in keep] for row in [header, *rows]]
    )
    return table.getvalue().encode()


def _read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    """A CSV's header and rows, each row as long as the header; a UsageError otherwise."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            table = list(csv.reader(handle))
    except (UnicodeDecodeError, csv.Error) as error:
        raise UsageError(f"{path} is not a readable CSV: {first_line(error)}") from None
    if not table:
        raise UsageError(f"{path} is empty: a table needs at least its header")
    header, *rows = table
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise UsageError(
                f"{path}, line {number}: {len(row)} fields where the header has {len(header)}"
            )
    return header, rows


def source_outputs(
    source: Path, directory: Path, name: str
) -> tuple[list[str], list[tuple[Path, bytes]]]:
    """The markdown for the tables and figures written at the top of ``source``, and the
    copies to write under ``directory/name/``."""
    lines, files = [], []
    for path in sorted(source.glob("*.csv")) + sorted(source.glob("*.png")):
        files.append((directory / name / path.name, _published(path)))
        link = f"{directory.name}/{name}/{path.name}"
        if path.suffix == ".png":
            lines += [f"![{path.stem}]({link})", ""]
            continue
        header, rows = _read_table(path)
        keep = [i for i, column in enumerate(header) if column not in HIDDEN_COLUMNS]
        lines += [f"`{path.name}` ([CSV]({link}), {len(rows)} rows):", ""]
        if len(rows) <= SHOWN_ROWS:
            shown = [[_cell(row[i]) for i in keep] for row in rows]
            lines += [markdown_table([header[i] for i in keep], shown), ""]
    return lines, files


@dataclass
class Section:
    """One section of the page: its name, its runs, and the folder whose tables and
    figures it shows (``source``: where the runs were made, or the page's own copies)."""

    name: str
    found: list[FinishedRun]
    source: Path

    @classmethod
    def of_source(cls, source: Path) -> Section:
        """A section from a directory of finished runs, checked whole."""
        found = finished_runs(source)
        for table in sorted(source.glob("*.csv")):
            _read_table(table)
        return cls(section_name(source), found, source)

    @classmethod
    def kept(cls, name: str, directory: Path) -> Section:
        """A section the page already has, rebuilt from its committed run summaries
        (``directory/runs/NAME``) and the tables and figures it copied (``directory/NAME``)."""
        summaries = directory / "runs" / name
        files = sorted(summaries.glob("*.json")) if summaries.is_dir() else []
        if not files:
            raise UsageError(
                f"--keep {name}: {summaries} holds no run summaries to rebuild it from"
            )
        found = []
        for file in files:
            summary = runs.read_json(file)
            if not isinstance(summary, dict) or not {"config", "metrics"} <= set(summary):
                raise UsageError(f"--keep {name}: {file} is not a run summary")
            run = FinishedRun(file.with_suffix(""), *_parts(summary), summary.get("name"))
            found.append(_readable(run))
        found.sort(key=lambda run: run.config.get("created", ""))
        return cls(name, found, directory / name)


def _parts(summary: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return summary["config"], summary["metrics"]


def _threads(found: Sequence[FinishedRun]) -> str:
    """How many threads the runs trained with, as their records say."""
    counts = sorted({run.metrics.get("threads") for run in found} - {None})
    return (
        f"{'/'.join(map(str, counts))} thread{'s' if counts != [1] else ''} per run"
        if counts
        else "threads not recorded"
    )


def write_section(
    section: Section, directory: Path, hardware: str
) -> tuple[str, list[tuple[Path, str | bytes]]]:
    """A section's markdown and its files (path, what to write): the figure is drawn
    into ``directory`` at once, everything else is returned to be written together."""
    found, name, source = section.found, section.name, section.source
    labels = run_names(found, source)
    columns = shown(COLUMNS, [run.metrics for run in found])
    if all(run.metrics.get("nonzero_params") == run.metrics.get("params") for run in found):
        columns = [c for c in columns if c.key != "nonzero_params"]  # nothing masked here
    header = ["run", "techniques", *(c.label for c in columns)]
    rows = [
        [label, run.options, *(c.cell(run.metrics) for c in columns)]
        for label, run in zip(labels, found, strict=True)
    ]
    references = [trained_reference(run, found) for run in found]
    if any(references):
        header.append(CHANGE)
        for row, run, reference in zip(rows, found, references, strict=True):
            row.append(
                "-" if reference in (None, run) else paired_change(reference.metrics, run.metrics)
            )
    commands = [f"- `{label}`: `{run.command}`" for label, run in zip(labels, found, strict=True)]
    total = sum(run.metrics.get("train_time_s") or 0 for run in found)
    total += sum(run.metrics.get("post_time_s") or 0 for run in found)
    with_epochs = [
        (label, run.metrics["history"]) for label, run in zip(labels, found, strict=True)
    ]
    with_epochs = [entry for entry in with_epochs if entry[1]]
    # One figure of the runs' curves, where it can be read and the source has none
    drawn = 0 < len(with_epochs) <= MAX_CURVES and not (source / "curves.png").exists()
    if drawn:
        plot_compare(with_epochs, directory / f"{name}.png")
    else:  # a figure an earlier build drew would show fewer runs than the table
        (directory / f"{name}.png").unlink(missing_ok=True)
    files: list[tuple[Path, str | bytes]] = [
        (directory / "runs" / name / f"{run.run_dir.name}.json", runs.dumps(run.summary(source)))
        for run in found
    ]
    outputs, copies = source_outputs(source, directory, name)
    files += copies
    table = io.StringIO()
    csv.writer(table, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows([header, *rows])
    files.append((directory / f"{name}.csv", table.getvalue()))
    text = "\n".join(
        [
            f"## {name}",
            "",
            *_protocol(found),
            f"- hardware: {hardware}, {_threads(found)}",
            f"- time: {total / 60:.1f} min of training and post-training, summed over the runs",
            f"- run summaries: [{directory.name}/runs/{name}/]({directory.name}/runs/{name}/)",
            "",
            *outputs,
            "Runs:",
            "",
            markdown_table(header, rows),
            "",
            f"![curves, dashed train, solid val]({directory.name}/{name}.png)"
            if drawn
            else f"Curves: each run's epochs are in its summary ({len(with_epochs)} runs trained).",
            "",
            "Commands:",
            "",
            *commands,
            "",
        ]
    )
    return text, files


def build_page(
    page: Path,
    sources: Sequence[Path],
    hardware: str,
    intro: Path | None = None,
    keep: Sequence[str] = (),
) -> Path:
    """``page``.md and the ``page`` folder of figures, CSVs and run summaries: a section
    for each source, then each ``keep`` section of the page rebuilt from its own records."""
    directory = page.with_suffix("")
    markdown = page.with_suffix(".md")
    if intro is not None and not intro.is_file():
        raise UsageError(f"--intro {intro} does not exist")
    # every section read and checked before anything is written
    chosen = [Section.of_source(source) for source in sources]
    for name in keep:
        kept = Section.kept(name, directory)
        same = next((section for section in chosen if section.name == name), None)
        if same is None:
            chosen.append(kept)
        else:  # runs made since join those the page had: a campaign over sessions
            have = {run.name(same.source) for run in same.found}
            earlier = [run for run in kept.found if run.name(kept.source) not in have]
            same.found = sorted(
                [*earlier, *same.found], key=lambda run: run.config.get("created", "")
            )
    names = [section.name for section in chosen]
    if len(set(names)) != len(names):
        raise UsageError("two sections have the same name: each needs its own")
    runs.check_root(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sections, files = [], []
    for section in chosen:
        text, written = write_section(section, directory, hardware)
        sections.append(text)
        files += written
    for path, content in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = content if isinstance(content, bytes) else content.encode()
        runs.atomic_write(path, lambda tmp, data=data: tmp.write_bytes(data))
    today = dt.date.today().isoformat()
    head = [
        "# Results",
        "",
        f"Built by `compress report` on {today} from the runs summarised under "
        f"[{directory.name}/runs/]({directory.name}/runs/); rebuild it rather than edit it.",
        "",
    ]
    if intro is not None:
        head += [intro.read_text().strip(), ""]
    text = "\n".join(head + sections)
    runs.atomic_write(markdown, lambda tmp: tmp.write_text(text))
    return markdown
