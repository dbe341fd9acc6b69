"""Reload a pruned network: shrink a freshly built model to a checkpoint's shapes.

Structured pruning changes layer widths, so ``load_state_dict`` into the model as the
registry builds it fails. Each conv, BN and linear layer takes its width from the saved
tensors instead; grouped convs keep their channel multiplier.
"""

from __future__ import annotations

import torch
from torch import nn

from ghost.module import GhostModule


def _resized(parameter: torch.Tensor | None, shape: torch.Size) -> nn.Parameter | None:
    if parameter is None:
        return None
    return nn.Parameter(parameter.new_empty(shape), requires_grad=parameter.requires_grad)


def fit_to_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Resize ``model``'s layers to the shapes in ``state``, then load it (strictly)."""
    fit_shapes(model, state)
    model.load_state_dict(state)
    return model


def fit_shapes(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Resize ``model``'s conv, BN and linear layers to the shapes in ``state``."""
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        weight = state.get(prefix + "weight")
        if weight is None:
            continue
        if isinstance(module, nn.Conv2d):
            multiplier = module.out_channels // module.groups
            if module.groups > 1:
                module.groups = weight.shape[0] // multiplier
            module.out_channels = weight.shape[0]
            module.in_channels = weight.shape[1] * module.groups
            module.weight = _resized(module.weight, weight.shape)
            module.bias = (
                _resized(module.bias, state[prefix + "bias"].shape)
                if module.bias is not None
                else None
            )
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.num_features = weight.shape[0]
            module.weight = _resized(module.weight, weight.shape)
            module.bias = _resized(module.bias, weight.shape)
            module.running_mean = module.running_mean.new_empty(weight.shape)
            module.running_var = module.running_var.new_empty(weight.shape)
        elif isinstance(module, nn.Linear):
            module.out_features, module.in_features = weight.shape
            module.weight = _resized(module.weight, weight.shape)
            if module.bias is not None:
                module.bias = _resized(module.bias, state[prefix + "bias"].shape)
    for module in model.modules():
        if isinstance(module, GhostModule):
            maps = module.primary_conv[0].out_channels
            module.out_channels = min(module.out_channels, maps * module.ratio)
    return model
