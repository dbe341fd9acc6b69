"""Rich tables and number formats shared by every command.

Each reported number is one ``MetricRow``: where it lives in a run's metrics (or a
``ModelProfile``), its label, and how it reads. Techniques add their own rows
(``Technique.metric_rows``), shown only when a run has them, so a plugin's numbers reach
every table without an edit here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table


def si(value: float, unit: str = "") -> str:
    """1234567 -> '1.23 M'; the paper's tables use M and G."""
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:g} {unit}".rstrip()


def mebibytes(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.2f} MiB"


Formatter = Callable[[Any, Mapping[str, Any]], str]


def count(value: Any, _metrics: Mapping[str, Any]) -> str:
    return f"{si(value)} ({value:,})"


def scaled(value: Any, _metrics: Mapping[str, Any]) -> str:
    return si(value)


def size(value: Any, _metrics: Mapping[str, Any]) -> str:
    return mebibytes(value)


def percent(value: Any, _metrics: Mapping[str, Any]) -> str:
    return f"{100 * value:.2f}%"


def share(value: Any, _metrics: Mapping[str, Any]) -> str:
    return f"{100 * value:.1f}%"


def seconds(value: Any, _metrics: Mapping[str, Any]) -> str:
    return f"{value:.1f} s"


def text(value: Any, _metrics: Mapping[str, Any]) -> str:
    return str(value)


def bits_as_size(value: Any, _metrics: Mapping[str, Any]) -> str:
    return mebibytes(value // 8)


BUSY = 0.1  # share of the CPUs other processes may use before a latency is flagged


def latency(value: Any, metrics: Mapping[str, Any]) -> str:
    """The median, the middle half of the repeats, where it ran, and a warning when other
    processes were using the CPUs."""
    where = f"{metrics.get('device', '?')}, {metrics.get('threads', '?')} thr"
    spread = metrics.get("latency_quartiles")
    middle = f" [{spread[0]:.2f}-{spread[1]:.2f}]" if spread else ""
    others = metrics.get("cpu_used_by_others")
    busy = (
        f", machine busy: {100 * others:.0f}% of CPU used by others"
        if (others is not None and others > BUSY)
        else ""
    )
    source = metrics.get("latency_source")
    return f"{value:.2f} ms{middle} ({where}{', ' + source if source else ''}{busy})"


def ort_latency(value: Any, metrics: Mapping[str, Any]) -> str:
    return f"{value:.2f} ms (cpu, {metrics.get('ort_threads', 1)} thr)"


def test_images(metrics: Mapping[str, Any]) -> int | None:
    """How many test images a run's top-1 is measured on, where it recorded them."""
    answers = metrics.get("test_correct")
    return answers.get("images") if isinstance(answers, Mapping) else None


def top1(value: Any, metrics: Mapping[str, Any]) -> str:
    """A top-1 with its 95% interval over the test images (Wilson), where they are known."""
    from compress.significance import interval

    images = test_images(metrics)
    if not images:
        return percent(value, metrics)
    bounds = interval(round(value * images), images)
    return f"{100 * value:.2f}% [{100 * bounds.low:.2f}, {100 * bounds.high:.2f}]"


def best_top1(value: Any, metrics: Mapping[str, Any]) -> str:
    epoch = metrics.get("best_epoch")
    return f"{top1(value, metrics)} ({'final' if epoch is None else f'epoch {epoch}'})"


@dataclass(frozen=True)
class MetricRow:
    """One reported number: its key in metrics.json, its label, how it reads."""

    key: str
    label: str
    format: Formatter = text
    optional: bool = False  # shown only when some column has it

    def cell(self, metrics: Mapping[str, Any]) -> str:
        value = metrics.get(self.key)
        return "n/a" if value is None else self.format(value, metrics)


PARAMS = MetricRow("params", "Total params", count)
TRAINABLE = MetricRow("trainable_params", "Trainable params", count)
NONZERO = MetricRow("nonzero_params", "Non-zero params", count)
MACS = MetricRow("macs", "Mult-Adds", scaled)
FLOPS = MetricRow("flops", "FLOPs (2 x MACs)", scaled)
PARAM_BYTES = MetricRow("param_bytes", "Params size", size)
ACTIVATIONS = MetricRow("activation_bytes", "Activations (est.)", size)
CHECKPOINT = MetricRow("serialized_bytes", "Checkpoint size", size)
PEAK = MetricRow("peak_memory_bytes", "Peak memory", size)
LATENCY = MetricRow("latency_ms", "Latency (batch 1)", latency)
ORT_LATENCY = MetricRow(
    "ort_latency_ms", "Latency, ONNX Runtime (batch 1)", ort_latency, optional=True
)

PROFILE_ROWS = (
    PARAMS,
    TRAINABLE,
    NONZERO,
    MACS,
    FLOPS,
    PARAM_BYTES,
    ACTIVATIONS,
    CHECKPOINT,
    PEAK,
    LATENCY,
    ORT_LATENCY,
)
RUN_ROWS = (
    PARAMS,
    MACS,
    FLOPS,
    ACTIVATIONS,
    CHECKPOINT,
    LATENCY,
    NONZERO,
    MetricRow("init_val_acc", "Top-1 before training", percent, optional=True),
    MetricRow("best_val_acc", "Best top-1", best_top1),
    MetricRow("final_val_acc", "Final top-1 [95% interval]", top1),
    MetricRow("train_time_s", "Train time", seconds),
    MetricRow("post_time_s", "Post-training time", seconds, optional=True),
)


def technique_rows() -> list[MetricRow]:
    """The rows every registered technique contributes."""
    from compress.techniques import get_technique, list_techniques

    return [row for name in list_techniques() for row in get_technique(name).metric_rows]


PROFILE_CAPTION = (
    "Measured: params, MACs (torch.utils.flop_counter), checkpoint size, latency "
    "(median after warm-up), peak memory (CUDA only). Estimated: activations "
    "(each tensor a module outputs, once)."
)


def shown(rows: Sequence[MetricRow], records: Sequence[Mapping[str, Any]]) -> list[MetricRow]:
    """The rows to show: optional ones only where some record has them."""
    return [r for r in rows if not r.optional or any(m.get(r.key) is not None for m in records)]


def profile_table(names: Sequence[str], records: Sequence[Mapping[str, Any]]) -> Table:
    """One column per model (a ``ModelProfile.to_dict()`` each), the seed README's rows."""
    table = Table(title="Model profile (batch 1)", caption=PROFILE_CAPTION)
    table.add_column("")
    for name, record in zip(names, records, strict=True):
        table.add_column(f"{name}\n{record['input_size']}px, {record['device']}", justify="right")
    for row in shown(PROFILE_ROWS, records):
        cells = [
            "skipped" if row is LATENCY and r["latency_ms"] is None else row.cell(r)
            for r in records
        ]
        table.add_row(row.label, *cells)
    return table


# Markup off everywhere: user text (paths, names) is shown as written, brackets and all.
console = Console(markup=False)
error_console = Console(stderr=True, markup=False)


def stderr_console(quiet: bool = False) -> Console:
    """Where progress goes: stderr (stdout stays for results), or nowhere."""
    return Console(stderr=True, markup=False, quiet=quiet)


def run_table(columns: Sequence[tuple[str, Mapping[str, Any]]]) -> Table:
    """A finished run next to its reference: costs and top-1 on the held-out split."""
    table = Table(title="Result (top-1 on the held-out test split)")
    table.add_column("")
    for title, _ in columns:
        table.add_column(title, justify="right")
    for row in shown([*RUN_ROWS, *technique_rows()], [metrics for _, metrics in columns]):
        table.add_row(row.label, *(row.cell(metrics) for _, metrics in columns))
    return table


CURVE_ROWS: tuple[tuple[str, str], ...] = (
    ("train loss", "train_loss"),
    ("train acc", "train_acc"),
    ("val loss", "val_loss"),
    ("val acc", "val_acc"),
)


def comparison_rows(runs: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """The seed's comparison, one cell per run: costs, then the first and last epoch."""
    rows = [[row.label, *(row.cell(m) for m in runs)] for row in shown(PROFILE_ROWS, runs)]
    rows = [row for row in rows if row[0] != NONZERO.label]
    rows.append(["epochs", *(str(len(metrics["history"])) for metrics in runs)])
    for which, index in (("first", 0), ("last", -1)):
        for label, key in CURVE_ROWS:
            values = [metrics["history"][index].get(key) for metrics in runs]
            cells = [
                "n/a"
                if v is None
                else top1(v, m)
                if key == "val_acc"
                else f"{100 * v:.2f}%"
                if key.endswith("acc")
                else f"{v:.4f}"
                for v, m in zip(values, runs, strict=True)
            ]
            rows.append([f"{which} epoch: {label}", *cells])
    rows.append(["final top-1 [95% interval]", *(top1(m["final_val_acc"], m) for m in runs)])
    rows.append([f"vs {names_first(runs)}: paired test", *paired_cells(runs)])
    return rows


def names_first(runs: Sequence[Mapping[str, Any]]) -> str:
    return str(runs[0].get("label", "the first run"))


def paired_cells(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each run against the first on the same test images: the change in top-1 and
    McNemar's exact p; n/a where a run did not record its answers or saw other images."""
    from compress.significance import paired_change

    return ["-", *(paired_change(runs[0], other) for other in runs[1:])]


def compare_table(names: Sequence[str], runs: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title="Runs compared (val: the held-out test split)")
    table.add_column("", no_wrap=True)
    for name in names:
        table.add_column(name, justify="right")
    for row in comparison_rows(runs):
        table.add_row(*row)
    return table
