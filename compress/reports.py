"""Rich tables and number formats shared by every command."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from compress.measure import ModelProfile


def si(value: float, unit: str = "") -> str:
    """1234567 -> '1.23 M'; the paper's tables use M and G."""
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:g} {unit}".rstrip()


def mebibytes(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.2f} MiB"


PROFILE_ROWS: tuple[tuple[str, str], ...] = (
    ("Total params", "params"),
    ("Trainable params", "trainable_params"),
    ("Non-zero params", "nonzero_params"),
    ("Mult-Adds", "macs"),
    ("FLOPs (2 x MACs)", "flops"),
    ("Params size", "param_bytes"),
    ("Activations (est.)", "activation_bytes"),
    ("Checkpoint size", "serialized_bytes"),
    ("Peak memory", "peak_memory_bytes"),
    ("Latency (batch 1)", "latency_ms"),
)


def _profile_cell(profile: ModelProfile, field: str) -> str:
    value = getattr(profile, field)
    if field in ("params", "trainable_params", "nonzero_params"):
        return f"{si(value)} ({value:,})"
    if field in ("macs", "flops"):
        return si(value)
    if field.endswith("_bytes"):
        return mebibytes(value)
    if field == "latency_ms":
        return "skipped" if value is None else f"{value:.2f} ms ({profile.threads} thr)"
    return str(value)


def profile_table(names: Sequence[str], profiles: Sequence[ModelProfile]) -> Table:
    """One column per model, the seed README's rows."""
    table = Table(title="Model profile (batch 1)", caption=PROFILE_CAPTION)
    table.add_column("")
    for name, profile in zip(names, profiles, strict=True):
        table.add_column(f"{name}\n{profile.input_size}px, {profile.device}", justify="right")
    for label, field in PROFILE_ROWS:
        table.add_row(label, *(_profile_cell(p, field) for p in profiles))
    return table


PROFILE_CAPTION = (
    "Measured: params, MACs (torch.utils.flop_counter), checkpoint size, latency "
    "(median after warm-up), peak memory (CUDA only). Estimated: activations "
    "(sum of leaf-module outputs)."
)

console = Console()
error_console = Console(stderr=True)


RUN_ROWS: tuple[tuple[str, str], ...] = (
    ("Params", "params"),
    ("Mult-Adds", "macs"),
    ("FLOPs", "flops"),
    ("Activations (est.)", "activation_bytes"),
    ("Checkpoint size", "serialized_bytes"),
    ("Latency (batch 1)", "latency_ms"),
    ("Best top-1", "best_val_acc"),
    ("Final top-1", "final_val_acc"),
    ("Train time", "train_time_s"),
    ("Pruning", "prune_kind"),
    ("Unpruned MACs", "unpruned_macs"),
    ("Target MACs", "target_macs"),
    ("Non-zero MACs (est.)", "nonzero_macs_est"),
    ("Non-zero params", "nonzero_params"),
    ("Quantization", "quantization"),
    ("BOPs", "bops"),
    ("BOPs in fp32", "float_bops"),
)


# Rows shown only when some run has them (technique-specific).
OPTIONAL_ROWS = (
    "prune_kind",
    "unpruned_macs",
    "target_macs",
    "nonzero_macs_est",
    "quantization",
    "bops",
    "float_bops",
)


def _run_cell(metrics: dict, field: str) -> str:
    value = metrics.get(field)
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    if field in ("params", "trainable_params", "nonzero_params"):
        return f"{si(value)} ({value:,})"
    if field.endswith("macs") or field.endswith("bops") or field == "flops":
        return si(value)
    if field.endswith("_bytes"):
        return mebibytes(value)
    if field == "latency_ms":
        return f"{value:.2f} ms ({metrics['device']}, {metrics['threads']} thr)"
    if field == "best_val_acc":
        return f"{100 * value:.2f}% (epoch {metrics['best_epoch']})"
    if field == "final_val_acc":
        return f"{100 * value:.2f}%"
    return f"{value:.1f} s"


def run_table(columns: Sequence[tuple[str, dict]]) -> Table:
    """A finished run next to its reference: costs and top-1 on the held-out split."""
    table = Table(title="Result (top-1 on the held-out test split)")
    table.add_column("")
    for title, _ in columns:
        table.add_column(title, justify="right")
    for label, field in RUN_ROWS:
        if field in OPTIONAL_ROWS and not any(field in metrics for _, metrics in columns):
            continue
        table.add_row(label, *(_run_cell(metrics, field) for _, metrics in columns))
    return table


CURVE_ROWS: tuple[tuple[str, str], ...] = (
    ("train loss", "train_loss"),
    ("train acc", "train_acc"),
    ("val loss", "val_loss"),
    ("val acc", "val_acc"),
)


def comparison_rows(runs: Sequence[dict]) -> list[list[str]]:
    """The seed's comparison, one cell per run: costs, then the first and last epoch."""
    rows = [
        [label, *(_run_cell(metrics, field) for metrics in runs)]
        for label, field in PROFILE_ROWS
        if field != "nonzero_params"
    ]
    rows.append(["epochs", *(str(len(metrics["history"])) for metrics in runs)])
    for which, index in (("first", 0), ("last", -1)):
        for label, key in CURVE_ROWS:
            values = [metrics["history"][index][key] for metrics in runs]
            cells = [f"{100 * v:.2f}%" if key.endswith("acc") else f"{v:.4f}" for v in values]
            rows.append([f"{which} epoch: {label}", *cells])
    return rows


def compare_table(names: Sequence[str], runs: Sequence[dict]) -> Table:
    table = Table(title="Runs compared (val: the held-out test split)")
    table.add_column("", no_wrap=True)
    for name in names:
        table.add_column(name, justify="right")
    for row in comparison_rows(runs):
        table.add_row(*row)
    return table
