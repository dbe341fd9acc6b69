"""``distill``: knowledge distillation from a teacher, on outputs or on features.

- ``output`` (Hinton et al. 2015): ``alpha * T^2 * KL(p_teacher^T || p_student^T)``.
- ``feature`` (FitNets hints): MSE between the teacher's feature map and the student's,
  mapped by a trained 1x1 conv adapter; the adapter is dropped after training.
- ``attention`` (Zagoruyko & Komodakis 2017): distance between the normalised spatial
  attention maps ``mean_c(f^2)``; no parameters.

All are added to the student's cross-entropy. The teacher is a run directory of this
toolkit, or a model name trained first on the same data and recipe.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compress.engine import LossTerm, train
from compress.errors import UsageError
from compress.measure import forward_with_hooks
from compress.options import Options, option
from compress.techniques.base import RunContext, Technique, register_technique

KINDS = ("output", "feature", "attention")


@dataclass
class DistillConfig(Options):
    teacher: str = option("resnet56", "teacher: a run directory, or a model name trained first")
    kind: str = option("output", "what the student imitates", choices=KINDS)
    temperature: float = option(
        4.0, "softmax temperature (output)", low=0, low_open=True, search=("float", 1.0, 8.0)
    )
    alpha: float = option(0.9, "weight of the distillation term", low=0, search=("float", 0.1, 1.0))
    student_layer: str | None = option(None, "student feature module (default: last 4-D)")
    teacher_layer: str | None = option(None, "teacher feature module (default: last 4-D)")
    teacher_epochs: int | None = option(
        None, "epochs for a teacher trained first (default: --epochs)", low=1
    )


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 KL(softmax(teacher/T) || softmax(student/T)), batch mean (Hinton et al.)."""
    log_student = F.log_softmax(student / temperature, dim=1)
    log_teacher = F.log_softmax(teacher / temperature, dim=1)
    kl = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def attention_map(features: torch.Tensor) -> torch.Tensor:
    """L2-normalised ``mean_c(f^2)``, flattened per sample."""
    return F.normalize(features.pow(2).mean(1).flatten(1), dim=1)


def resized_like(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``features`` bilinearly resized to ``target``'s spatial size, when they differ."""
    if features.shape[-2:] == target.shape[-2:]:
        return features
    return F.interpolate(features, size=target.shape[-2:], mode="bilinear", align_corners=False)


def attention_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    student = resized_like(student, teacher)
    return (attention_map(student) - attention_map(teacher)).pow(2).mean()


def last_feature_module(model: nn.Module, example: torch.Tensor) -> str:
    """The last module, in execution order, whose output is a feature map larger than 1x1
    (global pooling's 1x1 output has no spatial structure to imitate)."""
    seen: list[tuple[str, int]] = []
    names = {module: name for name, module in model.named_modules() if name}

    def record(module: nn.Module, _inputs: Any, output: Any) -> None:
        if torch.is_tensor(output) and output.ndim == 4:
            seen.append((names[module], output.shape[2] * output.shape[3]))

    forward_with_hooks(model.eval(), example, names, record)
    if not seen:
        raise UsageError("the model has no 4-D feature map to distill")
    spatial = [name for name, area in seen if area > 1]
    return spatial[-1] if spatial else seen[-1][0]


class FeatureTap:
    """Keeps the latest output of one named module."""

    def __init__(self, model: nn.Module, name: str) -> None:
        modules = dict(model.named_modules())
        if name not in modules:
            raise UsageError(f"no module named {name!r} to take features from")
        self.value: torch.Tensor | None = None
        self.handle = modules[name].register_forward_hook(self._keep)

    def _keep(self, _module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        self.value = output


def load_teacher(config: DistillConfig, context: RunContext) -> nn.Module:
    """A teacher from a run directory, or trained now from a model name."""
    from compress.registry import create_model
    from compress.runner import load_trained

    path = Path(config.teacher)
    if path.is_dir():
        return load_trained(path, context.console, context.data)[0]
    if "/" in config.teacher or config.teacher.startswith("."):
        raise UsageError(f"teacher run directory {config.teacher} does not exist")
    torch.manual_seed(context.train.seed)
    teacher = create_model(config.teacher, num_classes=context.data.num_classes)
    epochs = config.teacher_epochs or context.train.epochs
    context.console.print(f"training teacher {config.teacher} for {epochs} epochs", highlight=False)
    train(
        teacher,
        context.data,
        dataclasses.replace(context.train, epochs=epochs),
        console=context.console,
    )
    return teacher


@register_technique("distill")
class Distill(Technique):
    stage = "train"
    config_cls = DistillConfig
    summary = "knowledge distillation: output, feature (hint) or attention transfer"

    def loss_term(self, model: nn.Module, config: DistillConfig, context: RunContext) -> LossTerm:
        teacher = load_teacher(config, context)
        device = next(model.parameters()).device
        teacher.to(device).eval().requires_grad_(False)
        if config.kind == "output":

            def output_term(
                inputs: torch.Tensor, logits: torch.Tensor, _labels: Any
            ) -> torch.Tensor:
                with torch.no_grad():
                    target = teacher(inputs)
                return config.alpha * kd_loss(logits.float(), target.float(), config.temperature)

            return output_term
        example = context.example(device)
        student_tap = FeatureTap(model, config.student_layer or last_feature_module(model, example))
        self._student_tap = student_tap
        teacher_tap = FeatureTap(
            teacher, config.teacher_layer or last_feature_module(teacher, example)
        )
        adapter = None
        if config.kind == "feature":
            with torch.no_grad():
                model.eval()(example)
                teacher(example)
            adapter = nn.Conv2d(student_tap.value.shape[1], teacher_tap.value.shape[1], 1).to(
                device
            )
            model.add_module("kd_adapter", adapter)  # trained with the student, dropped after

        def feature_term(inputs: torch.Tensor, _logits: Any, _labels: Any) -> torch.Tensor:
            with torch.no_grad():
                teacher(inputs)
            student, target = student_tap.value.float(), teacher_tap.value.float()
            if adapter is None:
                return config.alpha * attention_loss(student, target)
            return config.alpha * F.mse_loss(resized_like(adapter(student), target), target)

        return feature_term

    def after_training(
        self, model: nn.Module, config: DistillConfig, context: RunContext
    ) -> nn.Module:
        tap = getattr(self, "_student_tap", None)
        if tap is not None:
            tap.handle.remove()
        if hasattr(model, "kd_adapter"):
            del model.kd_adapter
        return model
