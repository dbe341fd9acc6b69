import json

import pytest
import torch
from clitools import compress_cli
from rich.console import Console
from torch import nn

from compress.engine import TrainingInterrupted
from compress.errors import UsageError
from compress.measure import count_macs, count_params, profile_model
from compress.registry import create_model
from compress.runner import run
from compress.spec import RunSpec
from compress.techniques.quantize import (
    QuantizeConfig,
    bops,
    quantize_layers,
    quantizer_parameters,
    signed_inputs,
)

RESNET20_MACS = 40_551_040  # 10 classes, 32x32
RESNET20_PARAMS = 269_722
FIRST_CONV_MACS = 3 * 16 * 9 * 32 * 32
CLASSIFIER_MACS = 64 * 10


def quantized(weight_bits, act_bits, batch=None, **options):
    """ResNet-20 quantized as the transform does: signedness read from ``batch``."""
    torch.manual_seed(0)
    model = create_model("resnet20")
    config = QuantizeConfig(weight_bits=weight_bits, act_bits=act_bits, **options)
    signed = None if batch is None else signed_inputs(model, [batch])
    return model, quantize_layers(model, config, signed)


@pytest.mark.parametrize(("bits", "levels"), [(8, 255), (4, 15), (2, 3), (1, 2)])
def test_weights_take_at_most_the_levels_of_their_bits(bits, levels):
    model, chosen = quantized(bits, 8)
    assert (chosen["conv1"].weight, chosen["conv1"].act) == (8, 8)
    assert (chosen["fc"].weight, chosen["fc"].act) == (8, 8)
    assert (chosen["layer2.0.conv1"].weight, chosen["layer2.0.conv1"].act) == (bits, 8)
    weight = model.layer2[0].conv1.quant_weight().value
    per_channel = [len(torch.unique(channel)) for channel in weight]
    assert max(per_channel) <= levels
    out = model.eval()(torch.randn(2, 3, 32, 32))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("per_channel", [True, False])
def test_binary_weights_are_sign_times_the_mean_magnitude_of_their_scope(per_channel):
    model, _ = quantized(1, 8, per_channel=per_channel)
    layer = model.layer2[0].conv1
    weight = layer.quant_weight().value
    if per_channel:  # XNOR-Net: alpha = mean |w| of each output channel
        scale = layer.weight.abs().mean((1, 2, 3), keepdim=True)
        assert len(torch.unique(scale)) == layer.out_channels
    else:
        scale = layer.weight.abs().mean()
    torch.testing.assert_close(weight, torch.sign(layer.weight) * scale)


def input_levels(model, batch):
    """Distinct values each quantized layer's input takes on ``batch`` (a training step)."""
    levels = {}
    layers = {m.input_quant: name for name, m in model.named_modules() if hasattr(m, "bits")}

    def hook(module, _inputs, output):
        levels[layers[module]] = len(torch.unique(output.value))

    handles = [quantizer.register_forward_hook(hook) for quantizer in layers]
    model.train()(batch)
    for handle in handles:
        handle.remove()
    return levels


def test_post_relu_inputs_get_unsigned_quantizers_that_use_their_levels():
    batch = torch.randn(8, 3, 32, 32)
    model, chosen = quantized(2, 4, batch)
    # Only the image is signed: every other ResNet-20 layer reads a ReLU's output.
    assert [name for name, bits in chosen.items() if bits.signed_input] == ["conv1"]
    levels = input_levels(model, batch)
    inner = [name for name in chosen if name not in ("conv1", "fc")]
    assert len(inner) == 18 and all(levels[name] >= 12 for name in inner), levels
    assert all(levels[name] <= 16 for name in inner)


def test_one_bit_inputs_take_both_values_in_every_inner_layer():
    batch = torch.randn(8, 3, 32, 32)
    model, chosen = quantized(1, 1, batch)
    levels = input_levels(model, batch)
    assert all(levels[name] == 2 for name in chosen if name not in ("conv1", "fc")), levels


def test_quantizer_scales_are_not_counted_as_network_params():
    model, _ = quantized(2, 4, torch.randn(4, 3, 32, 32))
    extra = quantizer_parameters(model)
    assert sum(p.numel() for p in extra) == 20  # one learned input scale per layer
    profile = profile_model(model, 32, latency_repeats=0, auxiliary=extra)
    assert profile.params == RESNET20_PARAMS == count_params(create_model("resnet20"))[0]


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
        ({"mode": "int8"}, "--mode must be one of qat, ptq, finetune"),
    ],
)
def test_bad_quantize_options(options, message):
    with pytest.raises(UsageError, match=message):
        QuantizeConfig(**options)


def test_prune_then_qat_is_refused_with_what_to_run_instead():
    with pytest.raises(UsageError, match=r"Deep Compression's order.*--mode ptq.*--mode finetune"):
        RunSpec.from_options("prune+quantize", {"model": "resnet20"})


def test_prune_then_quantize_is_deep_compression_order(tmp_path):
    outcome = run(
        "quantize+prune",  # written in any order: prune, fine-tune, then quantize
        tmp_path,
        console=Console(quiet=True),
        model="resnet20",
        mode="finetune",
        weight_bits=4,
        act_bits=4,
        qat_epochs=1,
        ratio=0.5,
        finetune_epochs=1,
        epochs=2,
        dataset="synthetic",
        train_size=256,
        batch_size=64,
        input_size=16,
    )
    metrics = outcome.metrics
    assert [r["phase"] for r in metrics["history"]] == ["train", "train", "finetune", "qat"]
    assert [r["epoch"] for r in metrics["history"]] == [1, 2, 3, 4]
    assert metrics["macs"] < 0.6 * metrics["unpruned_macs"]  # pruned ...
    assert metrics["bops"] < metrics["float_bops"] / 30  # ... then quantized at 4 bits
    assert metrics["best_epoch"] in (4, None)  # the best of the delivered network
    assert metrics["post_time_s"] > 0 and metrics["final_val_acc"] > 0.5  # chance: 0.25


QUICK = [  # synthetic data at 16x16: a quarter of the work of 32x32
    "--dataset",
    "synthetic",
    "--train-size",
    "256",
    "--batch-size",
    "64",
    "--input-size",
    "16",
    "--no-augment",
    "--json",
]


def test_ghost_distill_quantize_runs_end_to_end(tmp_path):
    result = compress_cli(
        "run",
        "ghost+distill+quantize",
        "--backbone",
        "resnet20",
        "--teacher",
        "resnet20",
        "--teacher-epochs",
        "1",
        "--weight-bits",
        "4",
        "--act-bits",
        "4",
        "--epochs",
        "2",
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
    assert metrics["post_time_s"] > 0  # the calibration is the technique's own work


def test_a_quantized_run_resumes_exactly(tmp_path):
    """brevitas counts the steps that set a scale from statistics outside the state dict,
    and a loaded scale ends the counting: the checkpoint must carry it (the audit's case:
    epoch 2 of a resumed w2a4 run differed from an uninterrupted one)."""
    import dataclasses

    from compress.data import load_data
    from compress.engine import train
    from compress.reports import stderr_console
    from compress.runner import build

    options = {"model": "resnet20", "weight_bits": 2, "act_bits": 4, "epochs": 2}
    quick = {"dataset": "synthetic", "train_size": 128, "test_size": 64, "batch_size": 32}
    quick.update(precise_bn=64, device="cpu", input_size=16)
    spec = RunSpec.from_options("quantize", {**options, **quick})
    data, console = load_data(spec.data), stderr_console(quiet=True)
    straight = build(spec, data, console)
    train(straight.model, data, spec.train, console=console)

    saved = {}

    def stop_after_one(model, state):
        saved.update(
            weights={k: v.clone() for k, v in model.state_dict().items()},
            technique=straight.techniques["quantize"].training_state(model),
            state=dataclasses.replace(state, history=list(state.history)),
        )
        raise KeyboardInterrupt

    cut = build(spec, data, console)
    with pytest.raises(TrainingInterrupted):
        train(cut.model, data, spec.train, on_epoch_end=stop_after_one, console=console)
    resumed = build(spec, data, console)
    resumed.model.load_state_dict(saved["weights"])
    resumed.techniques["quantize"].restore_training_state(resumed.model, saved["technique"])
    train(resumed.model, data, spec.train, saved["state"], console=console)
    mine, theirs = resumed.model.state_dict(), straight.model.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
