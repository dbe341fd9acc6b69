"""One run, start to finish: validate, load data, build, train, measure, record.

Everything that can be refused is checked before the run directory exists, so bad
input leaves nothing behind. ``resume`` rebuilds the same run from its config.json.
"""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from safetensors.torch import save_model

from compress import runs
from compress.data import DATASETS, Dataset, load_dataset, subset
from compress.engine import (
    TrainConfig,
    TrainingDiverged,
    TrainingInterrupted,
    TrainState,
    resolve_device,
    train,
)
from compress.errors import UsageError
from compress.measure import profile_model
from compress.options import Options, option
from compress.plots import plot_curves
from compress.techniques import Technique, get_technique


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
class RunSpec:
    """What to run: a technique with its options, the data and the training recipe."""

    technique: str
    options: Options
    data: DataConfig
    train: TrainConfig

    def record(self) -> dict[str, Any]:
        return {
            "techniques": [{"name": self.technique, "options": self.options.to_record()}],
            "data": self.data.to_record(),
            "train": self.train.to_record(),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> RunSpec:
        try:
            (entry,) = record["techniques"]
            technique = get_technique(entry["name"])
            return cls(
                entry["name"],
                technique.config_cls(**entry["options"]),
                DataConfig(**record["data"]),
                TrainConfig(**record["train"]),
            )
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


def _build(spec: RunSpec, data: Dataset) -> tuple[Technique, torch.nn.Module]:
    technique = get_technique(spec.technique)
    torch.manual_seed(spec.train.seed)
    size = spec.train.input_size or data.image_size
    return technique, technique.build_model(spec.options, data.num_classes, size)


def start(spec: RunSpec, out_root: Path, console: Console) -> RunOutcome:
    """Validate and prepare everything, then create the run directory and train."""
    resolve_device(spec.train.device)
    data = load_data(spec.data)
    if spec.train.batch_size > len(data.train_x):
        raise UsageError(
            f"--batch-size {spec.train.batch_size} is larger than the "
            f"{len(data.train_x)} training images"
        )
    technique, model = _build(spec, data)
    run_dir = runs.new_run_dir(out_root, f"{technique.label(spec.options)}-{data.name}")
    config = {
        **spec.record(),
        "versions": runs.versions(),
        "argv": sys.argv,
        "created": dt.datetime.now().isoformat(timespec="seconds"),
    }
    runs.write_json(run_dir / runs.CONFIG, config)
    return _execute(spec, technique, model, data, run_dir, TrainState(), console)


def resume(run_dir: Path, console: Console) -> RunOutcome:
    """Continue a run from its last completed epoch, with the options it was started with."""
    spec = RunSpec.from_record(runs.read_json(run_dir / runs.CONFIG))
    checkpoint = runs.load_checkpoint(run_dir / runs.CHECKPOINT)
    resolve_device(spec.train.device)
    data = load_data(spec.data)
    technique, model = _build(spec, data)
    try:
        model.load_state_dict(checkpoint["model"])
        state = TrainState(**{k: v for k, v in checkpoint.items() if k != "model"})
    except (KeyError, TypeError, RuntimeError) as error:
        raise UsageError(f"checkpoint in {run_dir} does not fit its run: {error}") from None
    console.print(
        f"resuming {run_dir} after epoch {state.epoch}/{spec.train.epochs}", highlight=False
    )
    return _execute(spec, technique, model, data, run_dir, state, console)


def _execute(
    spec: RunSpec,
    technique: Technique,
    model: torch.nn.Module,
    data: Dataset,
    run_dir: Path,
    state: TrainState,
    console: Console,
) -> RunOutcome:
    label = technique.label(spec.options)

    def write_metrics(status: str, **extra: Any) -> dict[str, Any]:
        metrics = {
            "status": status,
            "technique": spec.technique,
            "label": label,
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
        state = train(model, data, spec.train, state, checkpoint, console)
    except TrainingInterrupted as stop:
        stop.run_dir = run_dir
        write_metrics("interrupted")
        if state.history:
            plot_curves(state.history, run_dir, label)
        raise
    except TrainingDiverged as error:
        write_metrics("failed", error=str(error))
        raise
    size = spec.train.input_size or data.image_size
    profile = profile_model(model, size, resolve_device(spec.train.device), latency_repeats=20)
    save_model(model.cpu(), str(run_dir / runs.WEIGHTS))
    plot_curves(state.history, run_dir, label)
    val = [record["val_acc"] for record in state.history]
    best = max(range(len(val)), key=val.__getitem__)
    metrics = write_metrics(
        "completed",
        **profile.to_dict(),
        best_val_acc=val[best],
        best_epoch=best + 1,
        final_val_acc=val[-1],
        train_time_s=sum(record["time_s"] for record in state.history),
    )
    return RunOutcome(run_dir, metrics)


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
    reference = get_technique(spec.technique).reference_model(spec.options)
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
