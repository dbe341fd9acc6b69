"""``quantize``: low-bit weights and activations with brevitas, simulated (fake-quant).

Layers are replaced one by one (brevitas' graph-level quantizer fails on timm's
GhostNet and MobileNetV3): every conv and linear layer becomes its brevitas version,
quantizing its weights (per output channel by default) and its input. Quantizing
each compute layer's input covers whatever activation precedes it (ReLU, Hardswish,
the SE gate's Hardsigmoid, a residual sum) and makes BOPs exact by construction.

An input that is never negative (after a ReLU, say) gets an unsigned quantizer, so a
b-bit input has all 2^b levels; a signed one would waste half of them. Which inputs
are non-negative is read per layer from a forward pass on training batches and recorded.

- Weights: 1 bit is binary, ``sign(w)`` times the mean ``|w|`` of each output channel
  (XNOR-Net; of the whole tensor with ``--no-per-channel``); 2 bits is ternary (narrow
  range {-1, 0, 1} x scale); 4 and 8 bits are scaled ints.
- Inputs: unsigned b-bit ints where non-negative (at 1 bit: {0, scale}, the threshold
  scale / 2 learned from a mean-based start), else signed (at 1 bit: ``sign(x)`` times a
  learned scale). Scales start from statistics of the first batches and are then learned.

Modes: ``qat`` trains with the quantizers in place from the first step; ``ptq``
quantizes the trained network to 8 bits and calibrates activation scales on training
batches; ``finetune`` quantizes the trained network at any width, calibrates, then
trains it quantized for ``--qat-epochs``. After pruning, only the last two apply:
``prune+quantize`` is Deep Compression's order (train, prune and fine-tune, quantize).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.errors import UsageError
from compress.measure import count_macs, forward_with_hooks
from compress.options import Options, option
from compress.reports import MetricRow, bits_as_size, count, scaled
from compress.techniques.base import RunContext, Technique, register_technique

BITS = (1, 2, 4, 8)
MODES = ("qat", "ptq", "finetune")
SIMULATED = "simulated (fake-quant)"
SIGN_BATCHES = 2  # training batches that decide which layer inputs are non-negative


@dataclass
class QuantizeConfig(Options):
    mode: str = option(
        "qat",
        "qat: train quantized from the start; ptq: 8 bits after training, calibrated; "
        "finetune: quantize the trained net, then --qat-epochs of QAT",
        choices=MODES,
        search=("choice", "qat", "finetune"),
    )
    weight_bits: int | None = option(
        None,
        "weight bits (1 binary, 2 ternary; none: 4, or 8 with --mode ptq)",
        choices=BITS,
        search=("choice", *BITS),
    )
    act_bits: int = option(
        8, "activation bits (inputs of every conv/linear)", choices=BITS, search=("choice", *BITS)
    )
    per_channel: bool = option(True, "one weight scale per output channel (also for 1 bit)")
    first_last_8bit: bool = option(True, "keep the first and last layers at 8 bits")
    calibration_batches: int = option(
        8, "ptq and finetune: training batches that set activation scales", low=1
    )
    qat_epochs: int = option(2, "finetune: quantization-aware epochs after quantizing", low=1)
    qat_lr: float | None = option(
        None, "finetune: their learning rate (default: --lr / 10)", low=0, low_open=True
    )

    def check(self) -> None:
        if self.weight_bits is None:  # what the mode supports; the record keeps the number
            self.weight_bits = 8 if self.mode == "ptq" else 4
        if self.mode == "ptq" and (self.weight_bits, self.act_bits) != (8, 8):
            raise UsageError(
                "--mode ptq quantizes to 8 bits (give --weight-bits 8 --act-bits 8); "
                "for fewer bits use --mode qat or finetune"
            )


@cache
def _quantizer_classes() -> dict[str, type]:
    """brevitas quantizers, built on first use: importing brevitas costs seconds."""
    from brevitas.core.function_wrapper import TensorClamp, TensorClampSte
    from brevitas.inject.enum import ScalingImplType, ScalingPerOutputType, StatsOp
    from brevitas.quant import (
        Int8ActPerTensorFloat,
        Int8WeightPerChannelFloat,
        Int8WeightPerTensorFloat,
        Uint8ActPerTensorFloat,
    )
    from brevitas.quant.base import SignedBinaryClampedConst
    from brevitas.quant.solver import ActQuantSolver, WeightQuantSolver

    class BinaryWeightPerChannelMeanAbs(SignedBinaryClampedConst, WeightQuantSolver):
        """sign(w) x mean |w| of its output channel (XNOR-Net); gradients pass straight."""

        tensor_clamp_impl = TensorClampSte
        scaling_impl_type = ScalingImplType.STATS
        scaling_stats_op = StatsOp.AVE
        scaling_per_output_type = ScalingPerOutputType.CHANNEL
        scaling_min_val = 1e-10

    class BinaryWeightPerTensorMeanAbs(BinaryWeightPerChannelMeanAbs):
        scaling_per_output_type = ScalingPerOutputType.TENSOR

    class UnsignedBinaryAct(Uint8ActPerTensorFloat):
        """{0, scale}: ones above scale / 2; the scale starts at the mean input, then learns."""

        bit_width = 1
        scaling_stats_op = StatsOp.AVE

    class SignedBinaryAct(SignedBinaryClampedConst, ActQuantSolver):
        """sign(x) x scale, the scale starting at the mean |x|, then learned."""

        tensor_clamp_impl = TensorClamp
        scaling_impl_type = ScalingImplType.PARAMETER_FROM_STATS
        scaling_stats_op = StatsOp.AVE
        collect_stats_steps = 300
        scaling_min_val = 1e-10

    return {
        "weight_1_channel": BinaryWeightPerChannelMeanAbs,
        "weight_1_tensor": BinaryWeightPerTensorMeanAbs,
        "weight_channel": Int8WeightPerChannelFloat,
        "weight_tensor": Int8WeightPerTensorFloat,
        "act_1_unsigned": UnsignedBinaryAct,
        "act_1_signed": SignedBinaryAct,
        "act_unsigned": Uint8ActPerTensorFloat,
        "act_signed": Int8ActPerTensorFloat,
    }


@dataclass(frozen=True)
class LayerBits:
    """How one layer is quantized: what BOPs count and the record shows."""

    weight: int
    act: int
    signed_input: bool

    def to_record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _quantizers(bits: LayerBits, per_channel: bool) -> dict[str, Any]:
    classes = _quantizer_classes()
    scope = "channel" if per_channel else "tensor"
    if bits.weight == 1:
        weight = {"weight_quant": classes[f"weight_1_{scope}"]}
    else:
        weight = {"weight_quant": classes[f"weight_{scope}"], "weight_bit_width": bits.weight}
    sign = "signed" if bits.signed_input else "unsigned"
    if bits.act == 1:
        return {**weight, "input_quant": classes[f"act_1_{sign}"]}
    return {**weight, "input_quant": classes[f"act_{sign}"], "input_bit_width": bits.act}


def _quant_layer(layer: nn.Module, bits: LayerBits, per_channel: bool) -> nn.Module:
    from brevitas.nn import QuantConv2d, QuantLinear

    quant = _quantizers(bits, per_channel)
    bias = layer.bias is not None
    if isinstance(layer, nn.Conv2d):
        new = QuantConv2d(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            layer.stride,
            layer.padding,
            layer.dilation,
            layer.groups,
            bias=bias,
            **quant,
        )
    else:
        new = QuantLinear(layer.in_features, layer.out_features, bias=bias, **quant)
    with torch.no_grad():
        new.weight.copy_(layer.weight)
        if bias:
            new.bias.copy_(layer.bias)
    new.bits = bits
    return new.to(layer.weight.device)


def compute_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The plain conv and linear layers that quantization replaces, in definition order."""
    return [(name, m) for name, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)]


def signed_inputs(model: nn.Module, batches: list[torch.Tensor]) -> dict[str, bool]:
    """Per compute layer: whether its input went below zero on ``batches``."""
    layers = dict(compute_layers(model))
    names = {module: name for name, module in layers.items()}
    negative = dict.fromkeys(layers, False)

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: Any) -> None:
        negative[names[module]] |= bool((inputs[0] < 0).any())

    was_training = model.training
    for batch in batches:
        forward_with_hooks(model.eval(), batch, layers.values(), record)
    model.train(was_training)
    return negative


def quantize_layers(
    model: nn.Module, config: QuantizeConfig, signed: dict[str, bool] | None = None
) -> dict[str, LayerBits]:
    """Replace every conv/linear in place; returns how each layer is quantized.

    ``signed`` says which inputs can be negative (default: all of them, the safe choice
    when no data is at hand); :func:`signed_inputs` measures it.
    """
    layers = compute_layers(model)
    if not layers:
        raise UsageError("the model has no conv or linear layer to quantize")
    edges = {layers[0][0], layers[-1][0]} if config.first_last_8bit else set()
    chosen = {}
    for name, layer in layers:
        weight, act = (8, 8) if name in edges else (config.weight_bits, config.act_bits)
        bits = LayerBits(weight, act, True if signed is None else signed[name])
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, _quant_layer(layer, bits, config.per_channel))
        chosen[name] = bits
    return chosen


def quantized_layers(model: nn.Module) -> dict[str, LayerBits]:
    return {name: m.bits for name, m in model.named_modules() if hasattr(m, "bits")}


def bops(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """(BOPs, weight bits in total): sum over layers of MACs x weight bits x input bits."""
    total = 0

    def hook(module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        macs = output.numel() // output.shape[1] * module.weight.numel()
        total += macs * module.bits.weight * module.bits.act

    layers = [m for m in model.modules() if hasattr(m, "bits")]
    forward_with_hooks(model.eval(), example, layers, hook)
    size = sum(m.weight.numel() * m.bits.weight for m in layers)
    return total, size


def quantizer_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The quantizers' own parameters (learned scales), not part of the network's."""
    return [p for name, p in model.named_parameters() if "_quant." in name]


def quantize_trained(model: nn.Module, config: QuantizeConfig, context: RunContext) -> None:
    """Quantize a trained network in place and set its activation scales on training
    batches (brevitas' calibration: quantizers off, statistics collected, scales fixed)."""
    from brevitas.graph.calibrate import calibration_mode

    device = next(model.parameters()).device
    batch_size = context.train.batch_size
    samples = [x for x, _ in context.training_batches(device, SIGN_BATCHES, batch_size)]
    quantize_layers(model, config, signed_inputs(model, samples))
    model.eval()
    with torch.no_grad(), calibration_mode(model):
        for inputs, _ in context.training_batches(device, config.calibration_batches, batch_size):
            model(inputs)
    context.network_changed()


@register_technique("quantize")
class Quantize(Technique):
    stage = "transform"
    post_order = 1  # after pruning: Deep Compression's order
    config_cls = QuantizeConfig
    metric_rows = (
        MetricRow("quantization", "Quantization", optional=True),
        MetricRow("bops", "BOPs", scaled, optional=True),
        MetricRow("float_bops", "BOPs in fp32", scaled, optional=True),
        MetricRow("weight_size_bits", "Quantized weights", bits_as_size, optional=True),
        MetricRow("quantizer_params", "Quantizer params", count, optional=True),
    )
    summary = "low-bit weights/activations (brevitas): QAT at 1/2/4/8 bits or 8-bit PTQ"

    def check_composition(self, config: QuantizeConfig, others: list[Technique]) -> None:
        restructuring = [t.name for t in others if t.restructures]
        if config.mode == "qat" and restructuring:
            raise UsageError(
                f"{restructuring[0]}+quantize runs in Deep Compression's order (train, "
                f"{restructuring[0]} and fine-tune, then quantize), which --mode qat (quantized "
                "from the first step) cannot follow: use --mode ptq (8 bits, calibrated) or "
                "--mode finetune (any bits, then --qat-epochs of quantization-aware training)"
            )

    def changes_training(self, config: QuantizeConfig) -> bool:
        return config.mode == "qat"

    def graph_obstacle(self, config: QuantizeConfig) -> str | None:
        if config.mode == "ptq":
            return None
        return "brevitas quantizers have not been checked under graph capture"

    def transform(self, model: nn.Module, config: QuantizeConfig, context: RunContext) -> nn.Module:
        if config.mode == "qat":
            device = next(model.parameters()).device
            batches = context.training_batches(device, SIGN_BATCHES, context.train.batch_size)
            quantize_layers(model, config, signed_inputs(model, [x for x, _ in batches]))
        return model

    def post_train(
        self, model: nn.Module, config: QuantizeConfig, context: RunContext
    ) -> nn.Module:
        if config.mode == "qat":
            return model
        quantize_trained(model, config, context)
        if config.mode == "finetune":
            recipe = dataclasses.replace(
                context.train,
                epochs=config.qat_epochs,
                lr=config.qat_lr or context.train.lr / 10,
                warmup_epochs=0.0,
                cuda_graph=None,
            )
            context.train_more(model, recipe, "qat")
        return model

    def restore(
        self, model: nn.Module, config: QuantizeConfig, record: dict[str, Any]
    ) -> nn.Module:
        layers = record.get("quantized_layers")
        if not layers:
            raise UsageError("the run did not record how its layers were quantized")
        signed = {name: bits["signed_input"] for name, bits in layers.items()}
        quantize_layers(model, config, signed)
        return model

    def auxiliary_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return quantizer_parameters(model)

    def training_state(self, model: nn.Module) -> dict[str, Any]:
        """Scales still being set from statistics: brevitas counts the steps that have
        collected them outside the state dict, and a loaded scale ends the collection, so
        a resumed run would fix its scales at once where the first run went on."""
        return {
            name: {
                "counter": m.counter,
                "buffer": m.buffer.clone(),
                "value": m.value.detach().clone(),
            }
            for name, m in _collecting_scales(model)
        }

    def restore_training_state(self, model: nn.Module, state: dict[str, Any]) -> None:
        scales = dict(_collecting_scales(model))
        with torch.no_grad():
            for name, saved in state.items():
                scale = scales[name]
                scale.counter = saved["counter"]
                scale.buffer.copy_(saved["buffer"])
                scale.value.copy_(saved["value"])

    def onnx_exporter(self, config: QuantizeConfig) -> Callable[..., None]:
        if min(config.weight_bits, config.act_bits) < 2:
            raise UsageError(
                "a 1-bit network has no ONNX form: QuantizeLinear needs at least 2 bits "
                "(brevitas' QCDQ export); 2- to 8-bit runs export"
            )
        return export_qcdq

    def report(
        self, model: nn.Module, config: QuantizeConfig, context: RunContext
    ) -> dict[str, Any]:
        example = context.example(next(model.parameters()).device)
        total, size_bits = bops(model, example)
        return {
            "quantization": SIMULATED,
            "bops": total,
            "float_bops": count_macs(model, example) * 32 * 32,  # the same net in fp32
            "weight_size_bits": size_bits,
            "quantizer_params": sum(p.numel() for p in quantizer_parameters(model)),
            "quantized_layers": {
                name: bits.to_record() for name, bits in quantized_layers(model).items()
            },
        }


def _collecting_scales(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """brevitas scales initialised from statistics over the first training steps."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if hasattr(m, "collect_stats_steps") and hasattr(m, "counter") and hasattr(m, "buffer")
    ]


def export_qcdq(model: nn.Module, example: torch.Tensor, path: Path, **options: Any) -> None:
    """The quantized network as QCDQ ONNX: QuantizeLinear / Clip / DequantizeLinear around
    each layer, which ONNX Runtime fuses into integer kernels (QLinearConv, MatMulInteger)."""
    from brevitas.export import export_onnx_qcdq

    export_onnx_qcdq(model, args=example, export_path=str(path), **options)
