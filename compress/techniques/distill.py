"""``distill``: knowledge distillation from a teacher, on outputs or on features.

With CE the student's cross-entropy on the labels:

- ``output`` (Hinton et al. 2015): ``(1 - alpha) CE + alpha T^2 KL(p_t^T || p_s^T)``,
  ``p^T`` the softmax at temperature ``T``, the KL averaged over the batch.
- ``attention`` (Zagoruyko & Komodakis 2017): ``CE + beta / 2 * sum_j mean((Q_s/|Q_s| -
  Q_t/|Q_t|)^2)`` over the layer pairs ``j``, with ``Q = mean_c(f^2)`` flattened and
  ``beta = 1000`` as in the paper; no parameters.
- ``feature`` (FitNets hints): ``CE + hint_weight * sum_j MSE(adapter_j(f_s), f_t)``, each
  adapter a trained 1x1 conv, dropped after training.

The feature kinds pair ``--student-layer`` with ``--teacher-layer`` (comma lists of
module names). By default they pair the last feature map of each resolution larger than
1x1 (a ResNet's three stages), or the last map of each net when the counts differ. The
teacher is a run directory of this toolkit, or a model name trained first on the same
data and recipe.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compress.checkpoints import load_foreign
from compress.errors import UsageError
from compress.loading import load
from compress.measure import forward_with_hooks
from compress.options import Options, option
from compress.registry import create_model, get_entry
from compress.techniques.base import RunContext, Technique, TrainingTerm, register_technique

KINDS = ("output", "feature", "attention")


@dataclass
class DistillConfig(Options):
    teacher: str = option(
        "resnet56",
        "teacher: a run directory, a checkpoint file (with --teacher-model), or a model name "
        "trained first",
    )
    teacher_model: str | None = option(
        None, "the network a --teacher checkpoint file holds (e.g. resnet56)"
    )
    kind: str = option(
        "output", "what the student imitates", choices=KINDS, search=("choice", *KINDS)
    )
    temperature: float = option(
        4.0, "output: softmax temperature T", low=0, low_open=True, search=("float", 1.0, 8.0)
    )
    alpha: float = option(
        0.9,
        "output: (1 - alpha) CE + alpha T^2 KL (Hinton et al.)",
        low=0,
        high=1,
        search=("float", 0.1, 1.0),
    )
    beta: float = option(
        1000.0, "attention: CE + beta/2 * sum of attention distances (Zagoruyko & Komodakis)", low=0
    )
    hint_weight: float = option(1.0, "feature: CE + hint_weight * sum of hint MSEs", low=0)
    student_layer: str | None = option(
        None, "feature kinds: student modules, comma-separated (default: see above)"
    )
    teacher_layer: str | None = option(
        None, "feature kinds: teacher modules paired with them (default: see above)"
    )
    teacher_epochs: int | None = option(
        None, "epochs for a teacher trained first (default: --epochs)", low=1
    )

    def layer_names(self) -> tuple[list[str] | None, list[str] | None]:
        student, teacher = (
            None if names is None else [n.strip() for n in names.split(",") if n.strip()]
            for names in (self.student_layer, self.teacher_layer)
        )
        return student, teacher

    def check(self) -> None:
        student, teacher = self.layer_names()
        if student is not None and teacher is not None and len(student) != len(teacher):
            raise UsageError(
                f"--student-layer names {len(student)} modules and --teacher-layer "
                f"{len(teacher)}: they are paired one to one"
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


def stage_outputs(model: nn.Module, example: torch.Tensor) -> list[str]:
    """For each resolution larger than 1x1, in execution order, the module that outputs
    its last feature map (a ResNet's stages; global pooling's 1x1 has nothing to imitate).
    Forward hooks of a container fire after its children, so a stage ends at its container."""
    seen: list[tuple[str, tuple[int, int]]] = []
    names = {module: name for name, module in model.named_modules() if name}

    def record(module: nn.Module, _inputs: Any, output: Any) -> None:
        if torch.is_tensor(output) and output.ndim == 4:
            seen.append((names[module], tuple(output.shape[2:])))

    forward_with_hooks(model.eval(), example, names, record)
    if not seen:
        raise UsageError("the model has no 4-D feature map to distill")
    last: dict[tuple[int, int], str] = {}
    for name, size in seen:
        if size != (1, 1):
            last.pop(size, None)  # keep the resolutions in the order they end
            last[size] = name
    return list(last.values()) or [seen[-1][0]]


def paired_layers(
    config: DistillConfig, student: nn.Module, teacher: nn.Module, example: torch.Tensor
) -> list[tuple[str, str]]:
    """(student module, teacher module) pairs that the feature kinds compare."""
    student_names, teacher_names = config.layer_names()
    if student_names is None or teacher_names is None:
        student_default = stage_outputs(student, example)
        teacher_default = stage_outputs(teacher, example)
        if len(student_default) != len(teacher_default):
            student_default, teacher_default = student_default[-1:], teacher_default[-1:]
        student_names = student_names or student_default
        teacher_names = teacher_names or teacher_default
    if len(student_names) != len(teacher_names):
        raise UsageError(
            f"{len(student_names)} student layers cannot pair with {len(teacher_names)} "
            "teacher layers: give both --student-layer and --teacher-layer"
        )
    return list(zip(student_names, teacher_names, strict=True))


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
    """A teacher from a run directory, from anyone's checkpoint file (its network named by
    ``--teacher-model``), or trained from a model name on the run's data and recipe for
    ``--teacher-epochs`` (once: the run's cache keeps it for the next run). A file's
    teacher sees the run's inputs, normalised as ``--normalize`` says."""
    path = Path(config.teacher)
    if path.is_file():
        if config.teacher_model is None:
            raise UsageError(
                f"--teacher {config.teacher} is a checkpoint file: name its network with "
                "--teacher-model (e.g. resnet56)"
            )
        teacher = create_model(config.teacher_model, num_classes=context.data.num_classes)
        loaded = load_foreign(teacher, path)
        context.console.print(f"teacher {loaded['file']}: {loaded['match']}", highlight=False)
        return teacher
    if config.teacher_model is not None:
        raise UsageError("--teacher-model names the network of a --teacher checkpoint file")
    if path.is_dir():
        return load(path)
    if "/" in config.teacher or config.teacher.startswith("."):
        raise UsageError(f"teacher run directory {config.teacher} does not exist")
    get_entry(config.teacher)  # an unknown name stops here, before a cache entry is made
    recipe = dataclasses.replace(
        context.train, epochs=config.teacher_epochs or context.train.epochs, init=None
    )
    context.console.print(f"teacher {config.teacher}, {recipe.epochs} epochs", highlight=False)
    return context.trained_alone(config.teacher, recipe)


class OutputDistillation(TrainingTerm):
    """``(1 - alpha) CE + alpha T^2 KL``: the student's logits against the teacher's."""

    def __init__(self, teacher: nn.Module, config: DistillConfig) -> None:
        self.teacher, self.config = teacher, config

    def __call__(
        self, inputs: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, task: torch.Tensor
    ) -> torch.Tensor:
        with torch.no_grad():
            target = self.teacher(inputs)
        kd = kd_loss(logits.float(), target.float(), self.config.temperature)
        return (1 - self.config.alpha) * task + self.config.alpha * kd


class FeatureDistillation(TrainingTerm):
    """Attention transfer or hints between paired feature maps, read through forward
    hooks; the hooks and the hints' adapters go when training ends."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        config: DistillConfig,
        pairs: list[tuple[str, str]],
        example: torch.Tensor,
    ) -> None:
        self.teacher, self.config = teacher, config
        self.student_taps = [FeatureTap(student, name) for name, _ in pairs]
        self.teacher_taps = [FeatureTap(teacher, name) for _, name in pairs]
        self.adapters: list[nn.Conv2d] = []
        if config.kind == "feature":
            with torch.no_grad():
                student.eval()(example)
                teacher(example)
            self.adapters = [
                nn.Conv2d(s.value.shape[1], t.value.shape[1], 1).to(example.device)
                for s, t in zip(self.student_taps, self.teacher_taps, strict=True)
            ]
            # Trained with the student (it owns them), dropped after training.
            student.add_module("kd_adapters", nn.ModuleList(self.adapters))

    def __call__(
        self, inputs: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, task: torch.Tensor
    ) -> torch.Tensor:
        with torch.no_grad():
            self.teacher(inputs)
        maps = [
            (s.value.float(), t.value.float())
            for s, t in zip(self.student_taps, self.teacher_taps, strict=True)
        ]
        if self.config.kind == "attention":
            distance = sum(attention_loss(student, target) for student, target in maps)
            return task + self.config.beta / 2 * distance
        hints = sum(
            F.mse_loss(resized_like(adapter(student), target), target)
            for adapter, (student, target) in zip(self.adapters, maps, strict=True)
        )
        return task + self.config.hint_weight * hints

    def release(self, model: nn.Module) -> nn.Module:
        for tap in self.student_taps:
            tap.handle.remove()
        if hasattr(model, "kd_adapters"):
            del model.kd_adapters
        return model


@register_technique("distill")
class Distill(Technique):
    stage = "train"
    config_cls = DistillConfig
    summary = "knowledge distillation: output, feature (hint) or attention transfer"

    def graph_obstacle(self, config: DistillConfig) -> str:
        return "distillation runs a teacher in the step, which is not captured"

    def loss_term(
        self, model: nn.Module, config: DistillConfig, context: RunContext
    ) -> TrainingTerm:
        teacher = load_teacher(config, context)
        device = next(model.parameters()).device
        teacher.to(device).eval().requires_grad_(False)
        with torch.no_grad():
            classes = teacher(context.example(device)).shape[-1]
        if classes != context.data.num_classes:
            raise UsageError(
                f"the teacher {config.teacher} answers {classes} classes, the data has "
                f"{context.data.num_classes}: distil from a teacher of the same data"
            )
        if config.kind == "output":
            return OutputDistillation(teacher, config)
        example = context.example(device)
        pairs = paired_layers(config, model, teacher, example)
        return FeatureDistillation(model, teacher, config, pairs, example)
