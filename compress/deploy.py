"""Where a compressed network would run: ONNX files, checked and timed in ONNX Runtime.

``export_onnx`` folds every BatchNorm that reads a conv's output into that conv (what a
deployment does; ONNX Runtime cannot fold it once quantizers stand between them) and
writes float ONNX, or, through the technique that quantized the network, its integer
form (brevitas' QCDQ: QuantizeLinear / DequantizeLinear around each layer, which ONNX
Runtime runs as integer kernels such as QLinearConv). ``export_run`` does it for a
finished run and checks the file against PyTorch on the run's test split;
``ort_latencies_ms`` times sessions side by side.

``onnx`` and ``onnxruntime`` come with the ``deploy`` extra; without them this module
says what to install.
"""

from __future__ import annotations

import copy
import json
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compress.data import Dataset, load_data, loader, prepare
from compress.errors import UsageError, first_line
from compress.loading import load_run
from compress.measure import cpu_used_by_others, latencies_ms
from compress.runs import atomic_write

INPUT, OUTPUT = "input", "logits"
OPSET = 17
FORMATS = ("onnx",)
# How far ONNX Runtime's top-1 may fall from PyTorch's on the same images: a float graph
# differs by rounding only, so not at all; a Q/DQ graph run node by node, by half a point.
# The fused integer kernels (what a deployment runs) requantize between layers where
# fake-quant keeps floats: their top-1 is reported beside, and moves more below 8 bits.
TOLERANCE = {False: 0.0, True: 0.005}


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise UsageError(
            "ONNX export and timing need onnx and onnxruntime: pip install 'compress-cnn[deploy]'"
        ) from None
    onnxruntime.set_default_logger_severity(3)  # its warnings are for its developers
    return onnxruntime


def batchnorm_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[nn.Conv2d, nn.Module]]:
    """(conv, BN) pairs where the BN normalises exactly the conv's output, found by
    running ``example`` through the network (so any architecture works, no tracing)."""
    made: dict[int, nn.Conv2d] = {}
    pairs: list[tuple[nn.Conv2d, nn.Module]] = []

    def conv_hook(module: nn.Module, _inputs: Any, output: Any) -> None:
        made[id(output)] = module

    def norm_hook(module: nn.Module, inputs: tuple[Any, ...], _output: Any) -> None:
        source = made.get(id(inputs[0]))
        if source is not None:
            pairs.append((source, module))

    handles = [
        module.register_forward_hook(conv_hook if isinstance(module, nn.Conv2d) else norm_hook)
        for module in model.modules()
        if isinstance(module, nn.Conv2d | nn.BatchNorm2d)
    ]
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for handle in handles:
            handle.remove()
    return pairs


@torch.no_grad()
def fold_batchnorm(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """``model`` (changed in place) with each BN that reads a conv's output folded into
    that conv's weight and bias, and replaced by ``Identity``: the same function in eval
    mode. A per-channel quantized weight keeps its integers; only its scales change."""
    names = {module: name for name, module in model.named_modules()}
    for conv, norm in batchnorm_pairs(model, example):
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        conv.weight.mul_(scale.view(-1, 1, 1, 1))
        shift = norm.bias - norm.running_mean * scale
        if conv.bias is None:
            conv.bias = nn.Parameter(shift.clone())
        else:
            conv.bias.copy_(conv.bias * scale + shift)
        parent, _, child = names[norm].rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, nn.Identity())
    return model


def export_onnx(model: nn.Module, input_size: int, path: Path, exporter: Any = None) -> Path:
    """Write ``model`` as ONNX at ``path`` (any batch size, ``input_size`` pixels square).

    ``exporter(model, example, path, **onnx_options)``: a technique's own export (the
    integer form of a quantized network); default: float ONNX by ``torch.onnx.export``.
    """
    _onnxruntime()
    example = torch.zeros(1, 3, input_size, input_size)
    deployed = fold_batchnorm(copy.deepcopy(model).cpu().eval(), example)
    options = {
        "input_names": [INPUT],
        "output_names": [OUTPUT],
        "dynamic_axes": {INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
        "opset_version": OPSET,
        "dynamo": False,  # the TorchScript exporter: seconds, where dynamo takes ten
    }

    def write(temporary: Path) -> None:
        with warnings.catch_warnings():  # deprecation notes about the exporter itself
            warnings.simplefilter("ignore")
            if exporter is None:
                torch.onnx.export(deployed, (example,), str(temporary), **options)
            else:
                exporter(deployed, example, temporary, **options)

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write(path, write)
    except UsageError:
        raise
    except Exception as error:  # the exporters' errors vary
        raise UsageError(f"cannot export to ONNX: {first_line(error)}") from None
    return path


def describe_input(path: Path, input_record: dict[str, Any]) -> None:
    """Write what feeding the network needs into the ONNX file's metadata (JSON values):
    its input size, normalisation and, where the data named them, its classes."""
    import onnx

    model = onnx.load(str(path))
    for key in ("input_size", "mean", "std", "classes"):
        if input_record.get(key) is not None:
            entry = model.metadata_props.add()
            entry.key, entry.value = key, json.dumps(input_record[key])
    atomic_write(path, lambda temporary: onnx.save(model, str(temporary)))


def ort_session(path: Path, threads: int = 1, optimized: bool = True) -> Any:
    """An ONNX Runtime CPU session on ``threads`` threads, with every graph optimisation
    (what a deployment runs: Q/DQ pairs fused into integer kernels), or with none (each
    node as written: the file's own arithmetic)."""
    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    level = "ORT_ENABLE_ALL" if optimized else "ORT_DISABLE_ALL"
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:
        raise UsageError(f"ONNX Runtime cannot load {path}: {first_line(error)}") from None


def top1_side_by_side(
    model: nn.Module,
    session: Any,
    data: Dataset,
    input_record: dict[str, Any],
    batch_size: int = 256,
) -> dict[str, float]:
    """Top-1 of the PyTorch network and of its ONNX session on ``data``'s test split, fed
    the same prepared batches, and the share of images on which their answers agree."""
    mean = torch.tensor(input_record["mean"] or data.mean).view(1, 3, 1, 1)
    std = torch.tensor(input_record["std"] or data.std).view(1, 3, 1, 1)
    torch_right = ort_right = agree = 0
    model = model.cpu().eval()
    batches = loader(data.test_x, data.test_y, batch_size, torch.device("cpu"), train=False)
    with torch.no_grad():
        for images, batch_labels in batches:
            inputs = prepare(images, mean, std, input_record["input_size"])
            torch_answer = model(inputs).argmax(1).numpy()
            (logits,) = session.run([OUTPUT], {INPUT: inputs.numpy()})
            ort_answer = np.argmax(logits, 1)
            labels = batch_labels.numpy()
            torch_right += int((torch_answer == labels).sum())
            ort_right += int((ort_answer == labels).sum())
            agree += int((torch_answer == ort_answer).sum())
    images = len(data.test_x)
    return {
        "torch_top1": torch_right / images,
        "ort_top1": ort_right / images,
        "agreement": agree / images,
    }


def ort_latencies_ms(
    sessions: Sequence[Any], input_size: int, batch: int = 1, repeats: int = 30, warmup: int = 5
) -> list[float]:
    """Median wall time of one ``batch`` through each session, in milliseconds, measured
    side by side (the sessions take turns in every repeat)."""
    inputs = np.random.default_rng(0).standard_normal(
        (batch, 3, input_size, input_size), dtype=np.float32
    )
    times: list[list[float]] = [[] for _ in sessions]
    for step in range(warmup + repeats):
        for index, session in enumerate(sessions):
            start = time.perf_counter()
            session.run([OUTPUT], {INPUT: inputs})
            if step >= warmup:
                times[index].append((time.perf_counter() - start) * 1e3)
    return [statistics.median(series) for series in times]


def exporter_of(spec: Any) -> Callable[..., None] | None:
    """The export of the last of a run's techniques (a ``RunSpec``) that has its own."""
    exporter = None
    for use in spec.uses:
        exporter = use.technique.onnx_exporter(use.options) or exporter
    return exporter


def onnx_latencies_ms(
    models: Sequence[tuple[nn.Module, Callable[..., None] | None]],
    input_size: int,
    threads: int = 1,
    batch: int = 1,
    repeats: int = 30,
) -> list[float]:
    """Each (model, exporter) exported to a temporary file and timed in ONNX Runtime,
    side by side."""
    with tempfile.TemporaryDirectory() as folder:
        sessions = [
            ort_session(export_onnx(model, input_size, Path(folder) / f"{i}.onnx", export), threads)
            for i, (model, export) in enumerate(models)
        ]
        return ort_latencies_ms(sessions, input_size, batch, repeats)


def export_run(
    run_dir: Path, out: Path | None = None, threads: int = 1, batch: int = 32, repeats: int = 30
) -> dict[str, Any]:
    """A finished run's network written as ONNX (its integer form when a technique has
    one), then checked in ONNX Runtime against PyTorch on the run's test split and, with
    ``repeats``, timed beside PyTorch at batch 1 and ``batch`` on ``threads`` threads."""
    loaded = load_run(run_dir)
    data = load_data(loaded.spec.data)  # before anything is written: missing data stops here
    exporter = exporter_of(loaded.spec)
    input_record = loaded.input
    path = export_onnx(
        loaded.model, input_record["input_size"], out or run_dir / "model.onnx", exporter
    )
    describe_input(path, input_record)
    session = ort_session(path, threads)
    result: dict[str, Any] = {
        "label": loaded.metrics["label"],
        "path": str(path),
        "form": "float" if exporter is None else "integer (QCDQ)",
        "onnx_bytes": path.stat().st_size,
        "threads": threads,
        "run_top1": loaded.metrics.get("final_val_acc"),
        **top1_side_by_side(loaded.model, session, data, input_record),
    }
    if exporter is None:  # float: the deployed graph must give PyTorch's top-1 exactly
        checked, what = result["ort_top1"], "ONNX Runtime"
    else:  # integer kernels round where fake-quant does not: the file itself is checked
        literal = top1_side_by_side(
            loaded.model, ort_session(path, 1, optimized=False), data, input_record
        )
        result["ort_top1_unfused"] = checked = literal["ort_top1"]
        what = "ONNX Runtime without fusion (the file's Q/DQ arithmetic)"
    allowed = TOLERANCE[exporter is not None]
    if exporter is not None:
        allowed = max(allowed, 2 / len(data.test_x))  # two images, on a small split
    gap = abs(checked - result["torch_top1"])
    result["check"] = (
        f"{'passed' if gap <= allowed else 'FAILED'}: top-1 of {what} {100 * gap:.2f} points "
        f"from PyTorch's (allowed {100 * allowed:.2f})"
    )
    if repeats:
        size = input_record["input_size"]
        result["cpu_used_by_others"] = cpu_used_by_others()  # how quiet the machine was
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for images in dict.fromkeys((1, batch)):
                inputs = torch.randn(images, 3, size, size)
                ort_ms = ort_latencies_ms([session], size, images, repeats)[0]
                torch_ms = latencies_ms([loaded.model], inputs, repeats)[0]
                result.setdefault("ort_latency_ms", {})[str(images)] = ort_ms
                result.setdefault("torch_latency_ms", {})[str(images)] = torch_ms
        finally:
            torch.set_num_threads(previous)
    return result
