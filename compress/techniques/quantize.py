"""``quantize``: low-bit weights and activations with brevitas, simulated (fake-quant).

Layers are replaced one by one (brevitas' graph-level quantizer fails on timm's
GhostNet and MobileNetV3): every conv and linear layer becomes its brevitas version,
quantizing its weights (per output channel by default) and its input. Quantizing
each compute layer's input covers whatever activation precedes it (ReLU, Hardswish,
the SE gate's Hardsigmoid, a residual sum) and makes BOPs exact by construction.

- 1 bit: brevitas' binary quantizers (its scaled-int quantizer at 1 bit gives NaN).
- 2 bits: narrow-range scaled int, i.e. ternary {-1, 0, 1} x scale.
- 4 and 8 bits: scaled int.

``--mode qat`` trains with the quantizers in place; ``--mode ptq`` quantizes the trained
network to 8 bits and calibrates activation scales on training batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from compress.errors import UsageError
from compress.measure import count_macs, forward_with_hooks
from compress.options import Options, option
from compress.techniques.base import RunContext, Technique, register_technique

BITS = (1, 2, 4, 8)
SIMULATED = "simulated (fake-quant)"


@dataclass
class QuantizeConfig(Options):
    mode: str = option(
        "qat", "qat: train quantized; ptq: 8-bit after training, calibrated", choices=("qat", "ptq")
    )
    weight_bits: int = option(
        4, "weight bits (1 binary, 2 ternary)", choices=BITS, search=("choice", *BITS)
    )
    act_bits: int = option(
        8, "activation bits (inputs of every conv/linear)", choices=BITS, search=("choice", *BITS)
    )
    per_channel: bool = option(True, "one weight scale per output channel")
    first_last_8bit: bool = option(True, "keep the first and last layers at 8 bits")
    calibration_batches: int = option(8, "ptq: training batches that set activation scales", low=1)

    def check(self) -> None:
        if self.mode == "ptq" and (self.weight_bits, self.act_bits) != (8, 8):
            raise UsageError("--mode ptq quantizes to 8 bits; use --mode qat for fewer bits")


def _quantizers(weight_bits: int, act_bits: int, per_channel: bool) -> dict[str, Any]:
    # brevitas is imported on use: importing it costs seconds and logs CUDA warnings.
    from brevitas.quant import (
        Int8ActPerTensorFloat,
        Int8WeightPerChannelFloat,
        Int8WeightPerTensorFloat,
    )
    from brevitas.quant.binary import (
        SignedBinaryActPerTensorConst,
        SignedBinaryWeightPerTensorConst,
    )

    if weight_bits == 1:
        weight = {"weight_quant": SignedBinaryWeightPerTensorConst}
    else:
        scaled = Int8WeightPerChannelFloat if per_channel else Int8WeightPerTensorFloat
        weight = {"weight_quant": scaled, "weight_bit_width": weight_bits}
    if act_bits == 1:
        return {**weight, "input_quant": SignedBinaryActPerTensorConst}
    return {**weight, "input_quant": Int8ActPerTensorFloat, "input_bit_width": act_bits}


def _quant_layer(layer: nn.Module, bits: tuple[int, int], per_channel: bool) -> nn.Module:
    from brevitas.nn import QuantConv2d, QuantLinear

    quant = _quantizers(*bits, per_channel)
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
    new.bits = bits  # (weight, activation): what BOPs are counted with
    return new.to(layer.weight.device)


def quantize_layers(model: nn.Module, config: QuantizeConfig) -> dict[str, tuple[int, int]]:
    """Replace every conv/linear in place; returns each layer's (weight, input) bits."""
    layers = [(name, m) for name, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)]
    if not layers:
        raise UsageError("the model has no conv or linear layer to quantize")
    edges = {layers[0][0], layers[-1][0]} if config.first_last_8bit else set()
    chosen = {}
    for name, layer in layers:
        bits = (8, 8) if name in edges else (config.weight_bits, config.act_bits)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, _quant_layer(layer, bits, config.per_channel))
        chosen[name] = bits
    return chosen


def bops(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """(BOPs, weight bits in total): sum over layers of MACs x weight bits x input bits."""
    total = 0

    def hook(module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        macs = output.numel() // output.shape[1] * module.weight.numel()
        total += macs * module.bits[0] * module.bits[1]

    layers = [m for m in model.modules() if hasattr(m, "bits")]
    forward_with_hooks(model.eval(), example, layers, hook)
    size = sum(m.weight.numel() * m.bits[0] for m in layers)
    return total, size


def float_bops(model: nn.Module, example: torch.Tensor) -> int:
    """BOPs of the same network in fp32: MACs x 32 x 32."""
    return count_macs(model, example) * 32 * 32


@register_technique("quantize")
class Quantize(Technique):
    stage = "transform"
    config_cls = QuantizeConfig
    # torch-pruning cannot restructure brevitas layers.
    incompatible_with = ("prune",)
    summary = "low-bit weights/activations (brevitas): QAT at 1/2/4/8 bits or 8-bit PTQ"

    def transform(self, model: nn.Module, config: QuantizeConfig, context: RunContext) -> nn.Module:
        if config.mode == "qat":
            self._float_bops = float_bops(model, _example(model, context))
            quantize_layers(model, config)
        return model

    def after_training(
        self, model: nn.Module, config: QuantizeConfig, context: RunContext
    ) -> nn.Module:
        if config.mode != "ptq":
            return model
        self._float_bops = float_bops(model, _example(model, context))
        from brevitas.graph.calibrate import calibration_mode

        quantize_layers(model, config)
        device = next(model.parameters()).device
        batches = context.training_batches(
            device, config.calibration_batches, context.train.batch_size
        )
        model.eval()
        with torch.no_grad(), calibration_mode(model):
            for inputs, _ in batches:
                model(inputs)
        return model

    def report(
        self, model: nn.Module, config: QuantizeConfig, context: RunContext
    ) -> dict[str, Any]:
        total, size_bits = bops(model, _example(model, context))
        return {
            "quantization": SIMULATED,
            "bops": total,
            "float_bops": self._float_bops,
            "weight_size_bits": size_bits,
        }


def _example(model: nn.Module, context: RunContext) -> torch.Tensor:
    return context.example(next(model.parameters()).device)
