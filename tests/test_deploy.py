"""ONNX export: BatchNorm folding is exact, a run's file gives PyTorch's answers in ONNX
Runtime (float, and integer QCDQ for a quantized run), what has no ONNX form is refused."""

import copy
import json

import onnx
import pytest
import torch
from clitools import compress_cli
from rich.console import Console

from compress import create_model, run, runs
from compress.deploy import export_onnx, export_run, fold_batchnorm, ort_session
from compress.errors import UsageError
from studies.objectives import recorded

QUICK = {"dataset": "synthetic", "epochs": 1, "batch_size": 64, "train_size": 128, "input_size": 16}


def test_folding_batchnorm_keeps_the_function_and_removes_every_norm():
    model = create_model("resnet20", num_classes=10).eval()
    for module in model.modules():  # statistics far from the identity
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(-2, 2)
    x = torch.randn(8, 3, 32, 32)
    folded = fold_batchnorm(copy.deepcopy(model), x[:1])
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)


def test_profile_times_models_in_onnx_runtime_side_by_side():
    result = compress_cli(
        "profile", "resnet20", "ghost_resnet20", "--onnx", "--repeats", "3", "--json"
    )
    records = json.loads(result.stdout)
    assert [r["ort_latency_ms"] > 0 for r in records] == [True, True]


def test_a_float_export_runs_in_onnx_runtime_with_any_batch(tmp_path):
    model = create_model("ghost_resnet20", num_classes=10).eval()
    path = export_onnx(model, 32, tmp_path / "ghost.onnx")
    graph = onnx.load(str(path)).graph
    assert not [node for node in graph.node if node.op_type == "BatchNormalization"]
    session = ort_session(path)
    x = torch.randn(5, 3, 32, 32)
    (logits,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(logits), model(x), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(
    ("technique", "options", "form", "integer_op"),
    [
        ("prune", {"model": "resnet20", "ratio": 0.5}, "float", None),
        ("ghost", {"backbone": "resnet20"}, "float", None),
        (
            "distill",
            {"model": "resnet20", "teacher": "resnet20", "kind": "attention"},
            "float",
            None,
        ),
        (
            "quantize",
            # trained longer: fewer test images near a rounding tie of the fake-quant net
            {"model": "resnet20", "weight_bits": 8, "act_bits": 8, "epochs": 2, "train_size": 256},
            "integer (QCDQ)",
            "QuantizeLinear",
        ),
    ],
)
def test_a_run_exports_and_gives_pytorchs_answers(tmp_path, technique, options, form, integer_op):
    outcome = run(technique, tmp_path, console=Console(quiet=True), **{**QUICK, **options})
    result = export_run(outcome.run_dir, threads=1, batch=4, repeats=3)
    assert result["form"] == form
    assert result["check"].startswith("passed"), result["check"]
    if form == "float":
        assert result["ort_top1"] == result["torch_top1"]
    else:  # the file's arithmetic is the network's; 8-bit integer kernels stay within 0.5
        assert abs(result["ort_top1_unfused"] - result["torch_top1"]) <= 2 / 128
        assert abs(result["ort_top1"] - result["torch_top1"]) <= max(0.005, 2 / 128)
    assert result["torch_top1"] == pytest.approx(outcome.metrics["final_val_acc"])  # same net
    assert set(result["ort_latency_ms"]) == {"1", "4"}
    ops = {node.op_type for node in onnx.load(result["path"]).graph.node}
    if integer_op:
        assert integer_op in ops and "DequantizeLinear" in ops
    else:
        assert not any("Quantize" in op for op in ops)


def test_export_records_its_check_in_the_run_and_refuses_what_has_no_onnx_form(tmp_path):
    float_run = run("baseline", tmp_path, console=Console(quiet=True), model="resnet20", **QUICK)
    assert compress_cli("export", str(float_run.run_dir), "--repeats", "2").returncode == 0
    exports = runs.read_json(float_run.run_dir / runs.METRICS)["exports"]["onnx"]
    assert exports["form"] == "float" and (float_run.run_dir / "model.onnx").is_file()
    # a study's ort_latency objective: measured on the finished run when chosen, only then
    metrics = runs.read_json(float_run.run_dir / runs.METRICS)
    assert "ort_latency" not in recorded(metrics, float_run.run_dir, ("accuracy", "macs"))
    values = recorded(metrics, float_run.run_dir, ("accuracy", "ort_latency"))
    assert values["ort_latency"] > 0 and values["accuracy"] == metrics["final_val_acc"]
    compared = compress_cli(
        "compare",
        str(float_run.run_dir),
        str(float_run.run_dir),
        "--onnx",
        "--png",
        str(tmp_path / "c.png"),
    )
    assert compared.returncode == 0 and "Latency, ONNX Runtime" in compared.stdout

    binary = run(
        "quantize",
        tmp_path,
        console=Console(quiet=True),
        model="resnet20",
        weight_bits=1,
        act_bits=1,
        **QUICK,
    )
    with pytest.raises(UsageError, match="1-bit network has no ONNX form"):
        export_run(binary.run_dir)
    assert not list(binary.run_dir.glob("*.onnx")) and not list(binary.run_dir.glob(".*.tmp"))
    refused = compress_cli("export", str(tmp_path / "nothing"))
    assert refused.returncode == 2 and "is not a directory" in refused.stderr
