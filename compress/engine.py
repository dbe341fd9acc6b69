"""The training engine: one loop for every technique, on CPU and GPU.

Data stays on the device (``compress.data.DeviceLoader``; a large image folder streams,
``compress.streaming``); the loop syncs with the host only to refresh the progress bar
and at the end of an epoch. Each completed epoch is a checkpoint, so Ctrl-C loses at
most the epoch under way and ``resume`` continues bit-for-bit on CPU. Over several
processes (``torchrun``), the step is DistributedDataParallel's (``compress.distributed``).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from compress import distributed, interrupts
from compress.cpu_backward import CpuConvolutionBackward, has_depthwise
from compress.data import Dataset, loader, normalization, prepare
from compress.errors import UsageError
from compress.options import Options, option
from compress.turns import turn

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "multistep", "onecycle")


@dataclass
class TrainConfig(Options):
    """How to train: the same options for every technique."""

    epochs: int = option(8, "training epochs (0: none, with --init)", low=0)
    batch_size: int = option(128, "images per step", low=1)
    optimizer: str = option("adam", "optimizer", choices=OPTIMIZERS)
    lr: float = option(1e-3, "peak learning rate", low=0, low_open=True, search=("log", 1e-4, 1e-1))
    momentum: float = option(0.9, "SGD momentum", low=0, high=1, high_open=True)
    nesterov: bool = option(False, "Nesterov momentum for SGD")
    weight_decay: float = option(1e-4, "weight decay", low=0)
    schedule: str = option("constant", "learning-rate schedule", choices=SCHEDULES)
    milestones: str = option("0.5,0.75", "multistep: epochs fractions where lr drops")
    gamma: float = option(0.1, "multistep: lr factor at each milestone", low=0, low_open=True)
    warmup_epochs: float = option(0.0, "linear warm-up length in epochs", low=0)
    label_smoothing: float = option(0.0, "label smoothing", low=0, high=1, high_open=True)
    grad_clip: float = option(0.0, "clip the gradient norm to this (0: off)", low=0)
    bn_momentum: float | None = option(
        0.1,
        "momentum of every BatchNorm, one value for all models (torchvision's MobileNetV3 "
        "ships 0.01, whose statistics lag far behind on short runs); none keeps each model's",
        low=0,
        high=1,
    )
    precise_bn: int = option(
        2048,
        "training images, augmented as in training, that recompute every BatchNorm's "
        "statistics before each evaluation, so a test score describes the current weights "
        "(0: off)",
        low=0,
    )
    seed: int = option(0, "seed of weights, data order and augmentation", low=0, high=2**63 - 1)
    init: str | None = option(
        None,
        "start from trained weights: a run directory of the same network, a checkpoint "
        "file (a state dict, anyone's; see --normalize), or timm:NAME's pretrained ones "
        "(with --epochs 0, only post-training techniques run)",
    )
    augment: bool = option(True, "random crop (4px padding), and flips where labels allow")
    cutout: int = option(0, "cutout square side in pixels (0: off)", low=0)
    input_size: int | None = option(None, "resize inputs on the device (default: native)", low=8)
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    amp: bool | None = option(
        None, "bf16 autocast on CUDA (default: on for inputs above 32px, see docs/benchmarks.md)"
    )
    channels_last: bool | None = option(
        None, "channels-last memory format (default: on for CPU; on CUDA above 32px, like --amp)"
    )
    compile: bool = option(False, "torch.compile the model")
    cuda_graph: bool | None = option(
        None,
        "replay the whole training step as one CUDA graph (default: on where it applies: "
        "CUDA, adam/adamw, no onecycle, no --compile, no distillation, no quantization)",
    )
    cudnn_benchmark: bool = option(True, "let cuDNN pick the fastest kernels (CUDA)")

    def check(self) -> None:
        if self.epochs == 0 and self.init is None:
            raise UsageError("--epochs 0 trains nothing: give --init with trained weights")
        if self.warmup_epochs > self.epochs:
            raise UsageError("--warmup-epochs cannot exceed --epochs")
        if self.schedule == "onecycle" and self.epochs and self.warmup_epochs >= self.epochs:
            raise UsageError(
                "--schedule onecycle warms up and then anneals: --warmup-epochs must be "
                "shorter than --epochs"
            )
        try:
            fractions = self.milestone_fractions()
        except ValueError:
            raise UsageError(
                f"--milestones must be fractions like 0.5,0.75, got {self.milestones!r}"
            ) from None
        if any(not 0 < f < 1 for f in fractions):
            raise UsageError("--milestones must lie strictly between 0 and 1")
        if self.batch_size % distributed.world_size():
            raise UsageError(
                f"--batch-size {self.batch_size} is the global batch: it must divide among "
                f"the {distributed.world_size()} processes"
            )

    def milestone_fractions(self) -> list[float]:
        return [float(part) for part in self.milestones.split(",") if part.strip()]


def resolve_device(name: str) -> torch.device:
    """'auto' is CUDA when present; asking for CUDA without it is a usage error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r} (use cpu, cuda, cuda:N or auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("CUDA was asked for but no CUDA device is available; use --device cpu")
    return device


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(RuntimeError):
    """Ctrl-C: the last completed epoch is checkpointed."""

    def __init__(self, epochs_done: int) -> None:
        super().__init__(f"interrupted after {epochs_done} completed epochs")
        self.epochs_done = epochs_done
        self.run_dir: object = None


@dataclass
class TrainState:
    """Everything a checkpoint holds to continue exactly where training stopped."""

    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    rng_cpu: torch.Tensor | None = None
    rng_data: torch.Tensor | None = None


def build_optimizer(
    model: nn.Module, config: TrainConfig, capturable: bool = False
) -> torch.optim.Optimizer:
    """``capturable``: optimizer state and learning rate live on the device, as a graph needs."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
        )
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    if capturable:
        lr = torch.tensor(config.lr, device=params[0].device)
        return cls(params, lr, weight_decay=config.weight_decay, capturable=True, fused=True)
    return cls(params, config.lr, weight_decay=config.weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The schedule, stepped once per batch, after a linear warm-up when asked."""
    sched = torch.optim.lr_scheduler
    total = max(1, config.epochs * steps_per_epoch)  # a run of no epochs still evaluates
    warmup = round(config.warmup_epochs * steps_per_epoch)
    if config.schedule == "onecycle":
        return sched.OneCycleLR(
            optimizer, config.lr, total_steps=total, pct_start=warmup / total if warmup else 0.3
        )
    main_steps = max(1, total - warmup)
    if config.schedule == "cosine":
        main = sched.CosineAnnealingLR(optimizer, main_steps)
    elif config.schedule == "multistep":
        marks = [round(f * total) - warmup for f in config.milestone_fractions()]
        main = sched.MultiStepLR(optimizer, [m for m in marks if m > 0], config.gamma)
    else:
        main = sched.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if not warmup:
        return main
    ramp = sched.LinearLR(optimizer, start_factor=1e-2, total_iters=warmup)
    return sched.SequentialLR(optimizer, [ramp, main], milestones=[warmup])


EpochCallback = Callable[[nn.Module, TrainState], None]
# ``term(inputs, logits, labels, task_loss) -> loss``: a training-time loss built on the
# task's cross-entropy (e.g. distillation's ``(1 - alpha) CE + alpha KD``).
LossTerm = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
StepOutputs = tuple[torch.Tensor, torch.Tensor]  # detached loss and logits
Step = Callable[[torch.Tensor, torch.Tensor], StepOutputs]


def graph_obstacle(
    config: TrainConfig, device: torch.device, technique_obstacles: Sequence[str] = ()
) -> str | None:
    """Why the training step cannot be one CUDA graph, or None when it can; the run's
    techniques give their own reasons (``technique_obstacles``)."""
    if device.type != "cuda":
        return "CUDA graphs need a CUDA device"
    if config.optimizer == "sgd":
        return "CUDA graphs need --optimizer adam or adamw"
    if config.schedule == "onecycle":
        return "--schedule onecycle changes Adam's betas every step, which a graph cannot"
    if config.compile:
        return "--compile and --cuda-graph are alternatives; pick one"
    if distributed.world_size() > 1:
        return "a run over several processes all-reduces gradients inside the step"
    return next(iter(technique_obstacles), None)


def check_step(config: TrainConfig, technique_obstacles: Sequence[str] = ()) -> None:
    """``--cuda-graph`` asked for where the step cannot be a graph: a UsageError, before
    anything is written."""
    obstacle = graph_obstacle(config, resolve_device(config.device), technique_obstacles)
    if config.cuda_graph and obstacle:
        raise UsageError(f"--cuda-graph: {obstacle}")


class GraphedStep:
    """The whole training step (forward, loss, backward, update) captured once and replayed.

    A GhostNet step at 32x32 is about a thousand small kernels, and launching them costs
    more than running them; one graph replay launches them all at once. The first
    ``warmup`` steps run eagerly on a side stream (they create the optimizer state and
    let cuDNN choose its kernels), the next is captured, and every later step copies its
    batch into the captured input buffers and replays. Each step trains on its own batch.
    """

    def __init__(self, step: Step, warmup: int = 3) -> None:
        self.step = step
        self.warmup = warmup
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs = self.labels = torch.empty(0)
        self.outputs: StepOutputs = (self.inputs, self.inputs)

    def __call__(self, inputs: torch.Tensor, labels: torch.Tensor) -> StepOutputs:
        if self.graph is None and self.warmup > 0:
            self.warmup -= 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                outputs = self.step(inputs, labels)
            torch.cuda.current_stream().wait_stream(side)
            return outputs
        if self.graph is None:
            self.inputs, self.labels = inputs.clone(), labels.clone()
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.outputs = self.step(self.inputs, self.labels)
        else:
            self.inputs.copy_(inputs)
            self.labels.copy_(labels)
        self.graph.replay()
        return self.outputs


class Trainer:
    """The per-step work of a run: device placement, batches, precision and the update."""

    def __init__(
        self,
        model: nn.Module,
        data: Dataset,
        config: TrainConfig,
        generator: torch.Generator,
        loss_term: LossTerm | None = None,
        graph_obstacles: Sequence[str] = (),
    ) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = config.cudnn_benchmark
        self.size = config.input_size or data.image_size
        # Measured on an H200 (docs/benchmarks.md): bf16 + channels-last trains GhostNet 2.6x
        # faster at 224px and 8% slower at 32px, where a step is too small to gain from either.
        large_on_cuda = self.device.type == "cuda" and self.size > 32
        channels_last = config.channels_last
        if channels_last is None:
            channels_last = self.device.type == "cpu" or large_on_cuda
        self.use_amp = self.device.type == "cuda" and (
            large_on_cuda if config.amp is None else config.amp
        )
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(device=self.device, memory_format=self.memory_format)
        if config.bn_momentum is not None:
            for module in model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.momentum = config.bn_momentum
        # Evaluation runs the network itself; training, over several processes, its DDP
        # wrapper, which averages the gradients of every process's share of the batch.
        self.forward_model = torch.compile(model) if config.compile else model
        self.step_model = self.forward_model
        if distributed.world_size() > 1:
            distributed.start(self.device)
            wrapped = distributed.wrap(model, self.device)
            self.step_model = torch.compile(wrapped) if config.compile else wrapped
        # PyTorch's CPU gradients of depthwise (and small pointwise) convolutions are slow;
        # elsewhere intercepting the backward would only cost; compiled graphs choose their own.
        faster = self.device.type == "cpu" and not config.compile and has_depthwise(model)
        self.backward_context = CpuConvolutionBackward if faster else contextlib.nullcontext
        check_step(config, graph_obstacles)
        obstacle = graph_obstacle(config, self.device, graph_obstacles)
        self.use_graph = obstacle is None and config.cuda_graph is not False
        self.mean, self.std = normalization(data, self.device)
        augmentation = {
            "crop_padding": 4 if config.augment else 0,
            "flip": config.augment and data.mirror_invariant,
            "cutout": config.cutout,
        }
        self.train_loader = loader(
            data.train_x,
            data.train_y,
            config.batch_size,
            self.device,
            train=True,
            generator=generator,
            shared=True,
            **augmentation,
        )
        self.test_loader = loader(
            data.test_x, data.test_y, max(config.batch_size, 256), self.device, train=False
        )
        # A fixed draw of training images, independent of the training order, so that
        # recomputing BN statistics never touches the training RNG (resume stays exact).
        # Augmented as in training: the statistics the weights were trained with. Those of
        # plain images differ (no zero-padded borders): they cost the published ResNet-20
        # 2.8 points (91.73% -> 88.96%), where augmented ones keep it at 91.74%.
        chosen = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(0))
        chosen = chosen[: config.precise_bn]
        self.bn_loader = (
            loader(
                data.train_x[chosen],
                data.train_y[chosen],
                min(config.batch_size, len(chosen)),
                self.device,
                train=True,
                **augmentation,
            )
            if len(chosen)
            else None
        )
        self.optimizer = build_optimizer(model, config, capturable=self.use_graph)
        self.scheduler = build_scheduler(self.optimizer, config, len(self.train_loader))
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.loss_term = loss_term
        self.step: Step = GraphedStep(self.eager_step) if self.use_graph else self.eager_step

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.use_amp:  # a graph must not keep autocast's cached casts of the weights
            return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=not self.use_graph)
        return contextlib.nullcontext()

    def eager_step(self, inputs: torch.Tensor, labels: torch.Tensor) -> StepOutputs:
        """One update of the weights on one batch."""
        with self.autocast():
            logits = self.step_model(inputs)
            loss = self.criterion(logits.float(), labels)
            if self.loss_term is not None:
                loss = self.loss_term(inputs, logits, labels, loss)
        self.optimizer.zero_grad(set_to_none=True)
        with self.backward_context():
            loss.backward()
        if self.config.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        return loss.detach(), logits.detach()

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        x = prepare(images, self.mean, self.std, self.size)
        return x.contiguous(memory_format=self.memory_format)

    def train_epoch(self, progress: Progress, task: Any) -> dict[str, float]:
        """One pass over the training split; syncs with the host ~20 times for the bar."""
        self.step_model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen, refresh_every = 0, max(1, len(self.train_loader) // 20)
        lr = float(self.optimizer.param_groups[0]["lr"])
        start = time.perf_counter()
        for step, (images, labels) in enumerate(self.train_loader):
            loss, logits = self.step(self.inputs(images), labels)
            self.scheduler.step()
            loss_sum += loss * len(labels)
            correct += (logits.argmax(1) == labels).sum()
            seen += len(labels)
            turn()  # packed runs (compress.turns): the next one steps while this one runs
            interrupts.check()  # a Ctrl-C that a library swallowed still ends the run here
            if (step + 1) % refresh_every == 0:
                running = loss_sum.item() / seen
                if not math.isfinite(running):
                    break
                rate = seen / (time.perf_counter() - start)
                stats = f"loss {running:.4f} acc {correct.item() / seen:.3f} {rate:.0f} img/s"
                progress.update(task, completed=step + 1, stats=stats)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - start
        if distributed.world_size() > 1:  # every process's share of every batch
            loss_sum, correct, total = distributed.summed(
                loss_sum, correct, torch.tensor(seen, device=self.device)
            )
            seen = int(total)
        train_loss = loss_sum.item() / seen
        if not math.isfinite(train_loss):
            raise TrainingDiverged(f"the training loss became {train_loss} (lower --lr?)")
        return {
            "train_loss": train_loss,
            "train_acc": correct.item() / seen,
            "lr": lr,
            "time_s": elapsed,
            "images": seen,
            "images_per_s": seen / elapsed,
        }

    @torch.no_grad()
    def recompute_bn_statistics(self) -> None:
        """Precise BN: replace every BatchNorm's running averages by the exact statistics of
        the current weights on ``--precise-bn`` training images, augmented as in training
        (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021).

        Running averages mix the statistics of many past weights; after a few dozen steps
        (one epoch of a small data set) they still describe the initial network, and a net
        that trains at 75% tests at chance. Only the BN layers run in training mode here,
        so dropout and quantizers' own statistics are left alone.
        """
        norms = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms or self.bn_loader is None:
            return
        momenta = [norm.momentum for norm in norms]
        self.forward_model.eval()
        for norm in norms:
            norm.reset_running_stats()  # in place, so a captured CUDA graph keeps its buffers
            norm.momentum = None  # cumulative average: every batch weighs the same
            norm.train()
        self.bn_loader.generator = torch.Generator().manual_seed(0)  # the same draw each time
        for images, _ in self.bn_loader:
            with self.autocast():
                self.forward_model(self.inputs(images))
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        self.forward_model.eval()

    @torch.no_grad()
    def evaluate(self, recompute_bn: bool = True) -> tuple[float, float]:
        """(mean cross-entropy, top-1 accuracy) over the whole test split, with BatchNorm
        statistics recomputed for the current weights first (``recompute_bn``)."""
        loss, correct = self.test_answers(recompute_bn)
        return loss, int(correct.sum()) / len(correct)

    @torch.no_grad()
    def test_answers(self, recompute_bn: bool = True) -> tuple[float, torch.Tensor]:
        """Mean cross-entropy over the test split and, per test image in order, whether
        the network's top-1 is right (a paired test compares runs image by image).
        ``recompute_bn=False`` keeps the statistics a network came with (one trained
        elsewhere, evaluated as it is)."""
        if recompute_bn:
            self.recompute_bn_statistics()
        self.forward_model.eval()
        loss_sum = torch.zeros((), device=self.device)
        answers = []
        for images, labels in self.test_loader:
            with self.autocast():
                logits = self.forward_model(self.inputs(images))
            loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum")
            answers.append(logits.argmax(1) == labels)
        correct = torch.cat(answers).cpu()
        return loss_sum.item() / len(correct), correct


def train(
    model: nn.Module,
    data: Dataset,
    config: TrainConfig,
    state: TrainState | None = None,
    on_epoch_end: EpochCallback | None = None,
    console: Console | None = None,
    loss_term: LossTerm | None = None,
    phase: str = "train",
    graph_obstacles: Sequence[str] = (),
    label: str = "",
) -> TrainState:
    """Train ``model`` in place for ``config.epochs``, continuing from ``state`` if given.

    ``on_epoch_end(model, state)`` runs after every completed epoch (checkpointing);
    ``loss_term`` replaces the cross-entropy by a training-time loss (e.g. distillation).
    Each epoch's record is tagged with ``phase`` ("train", or e.g. "finetune" after
    pruning). ``graph_obstacles``: why the run's techniques keep the step out of a CUDA
    graph. ``label`` names the run on each epoch's line. Ctrl-C raises
    ``TrainingInterrupted``; a NaN/inf loss raises ``TrainingDiverged``.
    """
    state = state or TrainState()
    console = console or Console(stderr=True, markup=False)
    generator = torch.Generator().manual_seed(config.seed)
    if state.rng_data is not None:
        generator.set_state(state.rng_data)
    if state.rng_cpu is not None:
        torch.set_rng_state(state.rng_cpu)
    trainer = Trainer(model, data, config, generator, loss_term, graph_obstacles)
    if state.optimizer is not None:
        trainer.optimizer.load_state_dict(state.optimizer)
        trainer.scheduler.load_state_dict(state.scheduler)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    try:
        with progress:
            for epoch in range(state.epoch, config.epochs):
                stage = "" if phase == "train" else f"{phase} "
                name = f"{label + ' ' if label else ''}{stage}epoch {epoch + 1}/{config.epochs}"
                task = progress.add_task(name, total=len(trainer.train_loader), stats="")
                record = {"epoch": epoch + 1, "phase": phase, **trainer.train_epoch(progress, task)}
                record["val_loss"], record["val_acc"] = trainer.evaluate()
                progress.remove_task(task)
                console.print(
                    f"{name}  train loss {record['train_loss']:.4f} acc {record['train_acc']:.4f}"
                    f"  val loss {record['val_loss']:.4f} acc {record['val_acc']:.4f}"
                    f"  {record['images_per_s']:.0f} img/s",
                    highlight=False,
                )
                state.history.append(record)
                state.epoch = epoch + 1
                state.optimizer = trainer.optimizer.state_dict()
                state.scheduler = trainer.scheduler.state_dict()
                state.rng_cpu = torch.get_rng_state()
                state.rng_data = generator.get_state()
                if on_epoch_end:
                    on_epoch_end(model, state)
    except KeyboardInterrupt:
        raise TrainingInterrupted(state.epoch) from None
    return state
