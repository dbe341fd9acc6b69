import json

import pytest
import torch
from clitools import compress_cli
from torch import nn

from compress.errors import UsageError
from compress.measure import count_macs
from compress.registry import create_model
from compress.techniques import parse_composition
from compress.techniques.quantize import QuantizeConfig, bops, quantize_layers

RESNET20_MACS = 40_551_040  # 10 classes, 32x32
FIRST_CONV_MACS = 3 * 16 * 9 * 32 * 32
CLASSIFIER_MACS = 64 * 10


def quantized(weight_bits, act_bits, **options):
    torch.manual_seed(0)
    model = create_model("resnet20")
    config = QuantizeConfig(weight_bits=weight_bits, act_bits=act_bits, **options)
    return model, quantize_layers(model, config)


@pytest.mark.parametrize(("bits", "levels"), [(8, 255), (4, 15), (2, 3), (1, 2)])
def test_weights_take_at_most_the_levels_of_their_bits(bits, levels):
    model, chosen = quantized(bits, 8)
    assert chosen["conv1"] == (8, 8) and chosen["fc"] == (8, 8)
    assert chosen["layer2.0.conv1"] == (bits, 8)
    weight = model.layer2[0].conv1.quant_weight().value
    per_channel = [len(torch.unique(channel)) for channel in weight]
    assert max(per_channel) <= levels
    if bits == 1:
        assert len(torch.unique(weight)) == 2  # binary: one scale for the tensor
    out = model.eval()(torch.randn(2, 3, 32, 32))
    assert torch.isfinite(out).all()


def test_bops_are_macs_times_weight_bits_times_input_bits():
    model, _ = quantized(4, 4)
    example = torch.zeros(1, 3, 32, 32)
    assert count_macs(model, example) == RESNET20_MACS
    total, size_bits = bops(model, example)
    inner = RESNET20_MACS - FIRST_CONV_MACS - CLASSIFIER_MACS
    assert total == (FIRST_CONV_MACS + CLASSIFIER_MACS) * 64 + inner * 16 == 670_081_024
    weights = sum(m.weight.numel() for m in model.modules() if hasattr(m, "bits"))
    edge_weights = 3 * 16 * 9 + 64 * 10
    assert size_bits == edge_weights * 8 + (weights - edge_weights) * 4
    everything_8bit, _ = quantized(4, 4, first_last_8bit=False)
    assert bops(everything_8bit, example)[0] == RESNET20_MACS * 16


def test_ghost_modules_are_quantized_inside():
    model = create_model("ghostnet", num_classes=10)
    quantize_layers(model, QuantizeConfig(weight_bits=2, act_bits=4))
    assert not any(type(m) in (nn.Conv2d, nn.Linear) for m in model.modules())
    assert torch.isfinite(model.eval()(torch.randn(1, 3, 64, 64))).all()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"weight_bits": 3}, "--weight-bits must be one of 1, 2, 4, 8"),
        ({"act_bits": 16}, "--act-bits must be one of"),
        ({"mode": "ptq", "weight_bits": 4}, "--mode ptq quantizes to 8 bits"),
    ],
)
def test_bad_quantize_options(options, message):
    with pytest.raises(UsageError, match=message):
        QuantizeConfig(**options)


def test_quantize_and_prune_do_not_combine():
    with pytest.raises(UsageError, match="quantize cannot be combined with prune"):
        parse_composition("quantize+prune")


QUICK = ["--dataset", "synthetic", "--batch-size", "32", "--no-augment", "--json"]


def test_ghost_distill_quantize_runs_end_to_end(tmp_path):
    result = compress_cli(
        "run",
        "ghost+distill+quantize",
        "--backbone",
        "resnet20",
        "--teacher",
        "resnet20",
        "--teacher-epochs",
        "2",
        "--weight-bits",
        "4",
        "--act-bits",
        "4",
        "--epochs",
        "3",
        *QUICK,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["technique"] == "ghost+quantize+distill"  # stage order
    assert metrics["quantization"] == "simulated (fake-quant)"
    assert metrics["bops"] < metrics["float_bops"] / 50
    assert metrics["final_val_acc"] > 0.5  # chance: 0.25


def test_ptq_keeps_the_float_accuracy(tmp_path):
    result = compress_cli(
        "run",
        "quantize",
        "--model",
        "resnet20",
        "--mode",
        "ptq",
        "--weight-bits",
        "8",
        "--epochs",
        "3",
        *QUICK,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    float_acc = metrics["history"][-1]["val_acc"] if "history" in metrics else None
    assert float_acc is None
    run_dir = tmp_path / metrics["run_dir"]
    history = json.loads((run_dir / "metrics.json").read_text())["history"]
    assert abs(metrics["final_val_acc"] - history[-1]["val_acc"]) <= 0.05
    assert metrics["bops"] == metrics["macs"] * 64
