"""One run, start to finish: validate, load data, build, train, measure, record.

Everything that can be refused is checked before the run directory exists, so bad
input leaves nothing behind. ``resume`` rebuilds the same run from its config.json.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from safetensors.torch import save_model

from compress import runs
from compress.data import DATASETS, Dataset, load_dataset, subset
from compress.engine import (
    LossTerm,
    TrainConfig,
    Trainer,
    TrainingDiverged,
    TrainingInterrupted,
    TrainState,
    resolve_device,
    train,
)
from compress.errors import UsageError
from compress.measure import profile_model
from compress.options import Options, from_values, option
from compress.plots import plot_curves
from compress.techniques import RunContext, Technique, get_technique, parse_composition


@dataclass
class DataConfig(Options):
    dataset: str = option(
        "digits", "data set (digits is bundled; cifar* download)", choices=DATASETS
    )
    data_dir: str | None = option(None, "torchvision root or a directory of .npz shards")
    train_size: int | None = option(None, "use only the first N training images", low=1)
    test_size: int | None = option(None, "use only the first N test images", low=1)


# Protocols by name; explicit options override them.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The seed experiment: GhostNet vs MobileNetV3-Large on CIFAR-10.
    "seed": {
        "data": {"dataset": "cifar10"},
        "train": {
            "optimizer": "adam",
            "lr": 1e-3,
            "weight_decay": 1e-4,
            "batch_size": 128,
            "epochs": 30,
            "schedule": "constant",
        },
    },
    # The paper's CIFAR recipe (Section 4.1, after He et al.).
    "paper": {
        "data": {"dataset": "cifar10"},
        "train": {
            "optimizer": "sgd",
            "lr": 0.1,
            "momentum": 0.9,
            "weight_decay": 1e-4,
            "batch_size": 128,
            "epochs": 164,
            "schedule": "multistep",
            "milestones": "0.5,0.75",
            "gamma": 0.1,
        },
    },
}


@dataclass
class TechniqueUse:
    """One technique of a run, with its options."""

    name: str
    options: Options

    @property
    def technique(self) -> Technique:
        return get_technique(self.name)


@dataclass
class RunSpec:
    """What to run: techniques in stage order with their options, the data, the recipe."""

    uses: list[TechniqueUse]
    data: DataConfig
    train: TrainConfig

    @property
    def name(self) -> str:
        return "+".join(use.name for use in self.uses)

    @property
    def label(self) -> str:
        builder, *others = self.uses
        return "+".join([builder.technique.label(builder.options), *(u.name for u in others)])

    @property
    def reference_model(self) -> str | None:
        """The uncompressed model to read this run against."""
        builder = self.uses[0]
        reference = builder.technique.reference_model(builder.options)
        if reference is None and len(self.uses) > 1 and builder.name == "baseline":
            return builder.options.model
        return reference

    def record(self) -> dict[str, Any]:
        return {
            "techniques": [{"name": u.name, "options": u.options.to_record()} for u in self.uses],
            "data": self.data.to_record(),
            "train": self.train.to_record(),
        }

    @classmethod
    def from_options(
        cls, composition: str, options: dict[str, Any], preset: str | None = None
    ) -> RunSpec:
        """A run from technique names joined by '+' and a flat dict of options, each
        going to the config that declares it: defaults, then the preset, then these."""
        names = parse_composition(composition)
        configs = [get_technique(name).config_cls for name in names]
        declared = {f.name for c in [*configs, DataConfig, TrainConfig] for f in fields(c)}
        unknown = sorted(set(options) - declared)
        if unknown:
            raise UsageError(f"{composition} takes no option {unknown[0]!r}")
        if preset is not None and preset not in PRESETS:
            raise UsageError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
        layers = PRESETS.get(preset, {})
        return cls(
            [TechniqueUse(n, from_values(c, options)) for n, c in zip(names, configs, strict=True)],
            from_values(DataConfig, layers.get("data", {}), options),
            from_values(TrainConfig, layers.get("train", {}), options),
        )

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> RunSpec:
        try:
            uses = [
                TechniqueUse(e["name"], get_technique(e["name"]).config_cls(**e["options"]))
                for e in record["techniques"]
            ]
            return cls(uses, DataConfig(**record["data"]), TrainConfig(**record["train"]))
        except (KeyError, TypeError, ValueError) as error:
            raise UsageError(f"config.json does not describe a run: {error}") from None


@dataclass
class RunOutcome:
    run_dir: Path
    metrics: dict[str, Any]


def load_data(config: DataConfig) -> Dataset:
    data = load_dataset(config.dataset, config.data_dir)
    if config.train_size or config.test_size:
        data = subset(data, config.train_size, config.test_size)
    return data


@dataclass
class Prepared:
    """A run's network ready to train: built, transformed, with its training-time terms."""

    model: torch.nn.Module
    context: RunContext
    extra_loss: LossTerm | None
    techniques: dict[str, Technique]


def build(spec: RunSpec, data: Dataset, console: Console) -> Prepared:
    """Build the network, apply ``transform`` techniques, set up ``train`` techniques."""
    context = RunContext(data, spec.train, console)
    techniques = {use.name: use.technique for use in spec.uses}
    builder, *others = spec.uses
    torch.manual_seed(spec.train.seed)
    model = techniques[builder.name].build_model(
        builder.options, data.num_classes, context.input_size
    )
    terms = []
    for use in others:
        technique = techniques[use.name]
        if technique.stage == "transform":
            model = technique.transform(model, use.options, context)
        elif technique.stage == "train":
            terms.append(technique.loss_term(model, use.options, context))
    extra = None
    if terms:

        def extra(inputs: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            return sum(term(inputs, logits, labels) for term in terms)

    return Prepared(model, context, extra, techniques)


def start(spec: RunSpec, out_root: Path, console: Console) -> RunOutcome:
    """Validate and prepare everything, then create the run directory and train."""
    resolve_device(spec.train.device)
    data = load_data(spec.data)
    if spec.train.batch_size > len(data.train_x):
        raise UsageError(
            f"--batch-size {spec.train.batch_size} is larger than the "
            f"{len(data.train_x)} training images"
        )
    prepared = build(spec, data, console)
    run_dir = runs.new_run_dir(out_root, f"{spec.label}-{data.name}")
    config = {
        **spec.record(),
        "versions": runs.versions(),
        "argv": sys.argv,
        "created": dt.datetime.now().isoformat(timespec="seconds"),
    }
    runs.write_json(run_dir / runs.CONFIG, config)
    return _execute(spec, prepared, run_dir, TrainState())


def resume(run_dir: Path, console: Console) -> RunOutcome:
    """Continue a run from its last completed epoch, with the options it was started with.

    Post-training stages (pruning, fine-tuning) are not checkpointed: a run interrupted
    there repeats them from the end of training, with the same result.
    """
    spec = RunSpec.from_record(runs.read_json(run_dir / runs.CONFIG))
    checkpoint = runs.load_checkpoint(run_dir / runs.CHECKPOINT)
    resolve_device(spec.train.device)
    data = load_data(spec.data)
    prepared = build(spec, data, console)
    try:
        prepared.model.load_state_dict(checkpoint["model"])
        state = TrainState(**{k: v for k, v in checkpoint.items() if k != "model"})
    except (KeyError, TypeError, RuntimeError) as error:
        raise UsageError(f"checkpoint in {run_dir} does not fit its run: {error}") from None
    console.print(
        f"resuming {run_dir} after epoch {state.epoch}/{spec.train.epochs}", highlight=False
    )
    return _execute(spec, prepared, run_dir, state)


def _execute(spec: RunSpec, prepared: Prepared, run_dir: Path, state: TrainState) -> RunOutcome:
    model, context, techniques = prepared.model, prepared.context, prepared.techniques
    data, console = context.data, context.console

    def write_metrics(status: str, **extra: Any) -> dict[str, Any]:
        metrics = {
            "status": status,
            "technique": spec.name,
            "label": spec.label,
            "dataset": data.name,
            "epochs_done": state.epoch,
            **extra,
            "history": state.history,
        }
        runs.write_json(run_dir / runs.METRICS, metrics)
        return metrics

    def checkpoint(trained: torch.nn.Module, current: TrainState) -> None:
        payload = {
            "model": trained.state_dict(),
            "epoch": current.epoch,
            "history": current.history,
            "optimizer": current.optimizer,
            "scheduler": current.scheduler,
            "rng_cpu": current.rng_cpu,
            "rng_data": current.rng_data,
        }
        runs.save_checkpoint(run_dir / runs.CHECKPOINT, payload)
        write_metrics("running")

    write_metrics("running")
    try:
        state = train(model, data, spec.train, state, checkpoint, console, prepared.extra_loss)
        for use in spec.uses:
            model = techniques[use.name].after_training(model, use.options, context)
        post = [use for use in spec.uses if techniques[use.name].stage == "post"]
        post_start = time.perf_counter()
        for use in post:
            model = techniques[use.name].post_train(model, use.options, context)
        post_time = time.perf_counter() - post_start
    except TrainingInterrupted as stop:
        stop.run_dir = run_dir
        write_metrics("interrupted")
        if state.history:
            plot_curves(state.history, run_dir, spec.label)
        raise
    except TrainingDiverged as error:
        write_metrics("failed", error=str(error))
        raise
    device = resolve_device(spec.train.device)
    profile = profile_model(model, context.input_size, device, latency_repeats=20)
    reports: dict[str, Any] = {}
    for use in spec.uses:
        reports.update(techniques[use.name].report(model, use.options, context))
    final_acc = _final_accuracy(model, context)
    save_model(model.cpu(), str(run_dir / runs.WEIGHTS))
    plot_curves(state.history, run_dir, spec.label)
    val = [record["val_acc"] for record in state.history]
    best = max(range(len(val)), key=val.__getitem__)
    metrics = write_metrics(
        "completed",
        **profile.to_dict(),
        **reports,
        best_val_acc=val[best],
        best_epoch=best + 1,
        final_val_acc=final_acc,
        train_time_s=sum(record["time_s"] for record in state.history),
        post_time_s=post_time,  # pruning and fine-tuning, calibration: the technique's own work
    )
    return RunOutcome(run_dir, metrics)


def load_trained(
    run_dir: Path, console: Console, data: Dataset | None = None
) -> tuple[torch.nn.Module, RunSpec, Dataset]:
    """A completed run's network with its final weights (pruned shapes fitted to them),
    with its spec and data set (``data`` when given, else the run's own, loaded)."""
    from safetensors.torch import load_file

    from compress.structure import fit_to_state_dict

    spec = RunSpec.from_record(runs.read_json(run_dir / runs.CONFIG))
    weights = run_dir / runs.WEIGHTS
    if not weights.exists():
        raise UsageError(f"run {run_dir} has no {runs.WEIGHTS}: did it complete?")
    data = data or load_data(spec.data)
    model = build(spec, data, console).model
    return fit_to_state_dict(model, load_file(weights)).eval(), spec, data


def _final_accuracy(model: torch.nn.Module, context: RunContext) -> float:
    """Top-1 of the delivered network (after any pruning or quantization) on the test split."""
    _, accuracy = Trainer(model, context.data, context.train, torch.Generator()).evaluate()
    return accuracy


# Options that must agree for two runs to be compared side by side.
MATCH_DATA = ("dataset", "train_size", "test_size")
MATCH_TRAIN = (
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "schedule",
    "weight_decay",
    "input_size",
    "seed",
    "augment",
)


def find_reference(spec: RunSpec, out_root: Path) -> RunOutcome | None:
    """The newest completed baseline run of the technique's reference model, same recipe."""
    reference = spec.reference_model
    if reference is None:
        return None
    for run_dir in runs.find_runs(out_root):
        try:
            config = runs.read_json(run_dir / runs.CONFIG)
            metrics = runs.read_json(run_dir / runs.METRICS)
        except UsageError:
            continue
        techniques = config.get("techniques", [])
        if techniques != [{"name": "baseline", "options": {"model": reference}}]:
            continue
        same_data = all(config["data"].get(k) == getattr(spec.data, k) for k in MATCH_DATA)
        same_train = all(config["train"].get(k) == getattr(spec.train, k) for k in MATCH_TRAIN)
        if same_data and same_train and metrics.get("status") == "completed":
            return RunOutcome(run_dir, metrics)
    return None


def run(
    techniques: str,
    out: str | Path = "runs",
    preset: str | None = None,
    console: Console | None = None,
    **options: Any,
) -> RunOutcome:
    """Python's ``compress run``: ``run("ghost+prune", backbone="vgg16", ratio=0.5)``."""
    spec = RunSpec.from_options(techniques, options, preset)
    return start(spec, Path(out), console or Console(stderr=True))
