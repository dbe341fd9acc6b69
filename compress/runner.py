"""One run, start to finish: validate, load data, build, train, measure, record.

Everything that can be refused is checked before the run directory exists, so bad
input leaves nothing behind. ``resume`` rebuilds the same run from its config.json.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import shutil
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from compress import distributed, runs
from compress.data import Dataset, load_data
from compress.engine import (
    TrainConfig,
    Trainer,
    TrainingInterrupted,
    TrainState,
    build_optimizer,
    build_scheduler,
    check_step,
    resolve_device,
    train,
)
from compress.errors import UsageError, first_line
from compress.folders import decoded_mb
from compress.initialization import initialize
from compress.loading import FORMAT, RunLoadError, load
from compress.measure import latencies_ms, profile_model
from compress.modules import named_modules
from compress.plots import plot_curves
from compress.reports import stderr_console
from compress.significance import encode_answers
from compress.spec import RunSpec, baseline_record
from compress.streaming import ImageFiles
from compress.techniques import RunContext, Technique, TrainingTerm
from compress.turns import lock_exclusively


@dataclass
class RunOutcome:
    run_dir: Path
    metrics: dict[str, Any]


@dataclass
class Prepared:
    """A run's network ready to train: built, transformed, with its training terms."""

    model: torch.nn.Module
    context: RunContext
    terms: list[TrainingTerm]
    techniques: dict[str, Technique]
    init_from: dict[str, Any] | None = None  # where the starting weights came from

    def loss_term(
        self, inputs: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, loss: torch.Tensor
    ) -> torch.Tensor:
        """The step's loss: the cross-entropy, through every training term in turn."""
        for term in self.terms:
            loss = term(inputs, logits, labels, loss)
        return loss


def checked_network(
    spec: RunSpec, context: RunContext
) -> tuple[torch.nn.Module, dict[str, Any] | None]:
    """The builder's network, with ``--init``'s weights, once every other technique has
    checked that it can act on it; and where the weights came from."""
    builder, *others = spec.uses
    torch.manual_seed(spec.train.seed)
    model = builder.technique.build_model(
        builder.options, context.data.num_classes, context.input_size
    )
    init_from = None
    if spec.train.init:
        model, init_from = initialize(model, builder, spec.train.init, context)
        if "match" in init_from:
            context.console.print(
                f"--init {init_from['file']}: {init_from['match']}", highlight=False
            )
    label = builder.technique.label(builder.options)
    dry_run(model, context.input_size, label, context.data.num_classes)
    for use in others:
        use.technique.check_model(model, use.options, context)
    return model, init_from


def dry_run(model: torch.nn.Module, size: int, label: str, classes: int | None = None) -> None:
    """One forward pass at input size ``size``, before anything is written: an input the
    network cannot take, or answers of other than ``classes`` classes, fail here, in one
    line, not after the run directory exists."""
    try:
        with torch.no_grad():
            answers = model.eval()(torch.zeros(1, 3, size, size))
        if classes is not None and answers.shape[-1] != classes:
            raise UsageError(f"{label} answers {answers.shape[-1]} classes, the data has {classes}")
    except (RuntimeError, MemoryError) as error:
        reason = first_line(error)
        if isinstance(error, MemoryError) or "alloc" in reason.lower():
            raise UsageError(
                f"{label} at input size {size} needs more memory than is free"
            ) from None
        raise UsageError(f"input size {size} is too small for {label}: {reason}") from None
    finally:
        model.train()


def preflight(spec: RunSpec) -> None:
    """Every check a run makes before it trains, without training: a study asks this
    before it trains a shared backbone for a trial that would then be refused."""
    data = load_data(spec.data)
    checked_network(spec, RunContext(data, spec.train, stderr_console(quiet=True)))


def build(spec: RunSpec, data: Dataset, console: Console, cache: Path | None = None) -> Prepared:
    """Build the network, let every technique check it, apply ``transform`` techniques,
    set up ``train`` techniques. ``cache`` holds networks trained once (``trained_once``)."""

    def trained_alone(model: str, recipe: TrainConfig) -> torch.nn.Module:
        alone = RunSpec.from_options("baseline", {"model": model})
        alone = RunSpec(alone.uses, spec.data, recipe)
        if cache is None:  # no results root to keep it in: train it here
            prepared = build(alone, data, console)
            train(prepared.model, data, recipe, console=console)
            return prepared.model
        return load(trained_once(alone, cache, console).run_dir)

    obstacles = [use.technique.graph_obstacle(use.options) for use in spec.uses]
    context = RunContext(
        data,
        spec.train,
        console,
        graph_obstacles=[reason for reason in obstacles if reason],
        trained_alone=trained_alone,
        label=spec.label,
    )
    techniques = {use.name: use.technique for use in spec.uses}
    model, init_from = checked_network(spec, context)
    terms: list[TrainingTerm] = []
    for use in spec.uses[1:]:
        technique = techniques[use.name]
        if technique.stage == "transform":
            model = technique.transform(model, use.options, context)
        elif technique.stage == "train":
            terms.append(technique.loss_term(model, use.options, context))
    return Prepared(model, context, terms, techniques, init_from)


def start(
    spec: RunSpec,
    out_root: Path,
    console: Console,
    cache: Path | None = None,
    run_dir: Path | None = None,
    curves: bool = True,
) -> RunOutcome:
    """Validate and prepare everything, then create the run directory (``run_dir``, else
    a new one under ``out_root``) and train. ``cache`` defaults to ``out_root/cache``;
    ``curves``: draw the training curves (``accuracy.png``, ``loss.png``)."""
    runs.check_root(out_root)
    resolve_device(spec.train.device)
    data = load_data(spec.data)
    if data.skipped:
        console.print(f"{data.skipped} images could not be read and are left out", highlight=False)
    if isinstance(data.train_x, ImageFiles):
        count = len(data.train_x) + len(data.test_x)
        console.print(
            f"{count:,} images, {decoded_mb(count, data.image_size):,.0f} MB decoded, over "
            f"--memory-budget-mb {spec.data.memory_budget_mb:g}: streamed from disk "
            f"({data.train_x.workers} decoding workers)",
            highlight=False,
        )
    if spec.train.batch_size > len(data.train_x):
        raise UsageError(
            f"--batch-size {spec.train.batch_size} is larger than the "
            f"{len(data.train_x)} training images"
        )
    prepared = build(spec, data, console, cache or out_root / CACHE)
    check_step(spec.train, prepared.context.graph_obstacles)
    norms = (torch.nn.modules.batchnorm._BatchNorm,)
    if spec.train.batch_size < 2 and any(isinstance(m, norms) for m in prepared.model.modules()):
        raise UsageError(
            "--batch-size 1: BatchNorm needs at least 2 images per batch to normalise in training"
        )
    if not distributed.is_main():  # torchrun's other processes: rank 0 writes the run
        run_dir = distributed.scratch_directory(f"{spec.label}-{data.name}")
    elif run_dir is None:
        run_dir = runs.new_run_dir(out_root, f"{spec.label}-{data.name}")
    else:
        run_dir.mkdir(parents=True)
    config = {
        "format": FORMAT,
        **spec.record(),
        "input": {
            "num_classes": data.num_classes,
            "image_size": data.image_size,
            "input_size": prepared.context.input_size,
            "mean": list(data.mean),
            "std": list(data.std),
            **({"classes": list(data.classes)} if data.classes else {}),
            **({"skipped_images": data.skipped} if data.skipped else {}),
            **(
                {
                    "streamed": True,
                    "crop_fraction": data.test_x.crop_fraction,
                    "interpolation": data.test_x.interpolation,
                }
                if isinstance(data.train_x, ImageFiles)
                else {}
            ),
        },
        "init_from": prepared.init_from,
        "versions": runs.versions(),
        "argv": [runs.mask_secrets(word) for word in sys.argv],
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        **({"processes": distributed.world_size()} if distributed.world_size() > 1 else {}),
    }
    with runs.held(run_dir):
        runs.write_json(run_dir / runs.CONFIG, config)
        return _execute(spec, prepared, run_dir, TrainState(), curves)


class RunComplete(Exception):
    """``--resume`` of a run that has nothing left to do."""


def resume(run_dir: Path, console: Console) -> RunOutcome:
    """Continue a run from its last completed epoch, with the options it was started with.

    Post-training stages (pruning, fine-tuning) are not checkpointed: a run interrupted
    there repeats them from the end of training, with the same result. A completed run
    raises ``RunComplete``; a run another process is training, a ``UsageError``.
    """
    if not distributed.is_main():  # torchrun's other processes resume a copy
        run_dir = distributed.scratch_directory(run_dir.name, copy_of=run_dir)
    spec = RunSpec.from_record(runs.read_json(run_dir / runs.CONFIG))
    with runs.held(run_dir):
        status = runs.read_json(run_dir / runs.METRICS).get("status")
        if status == "completed":
            raise RunComplete(f"{run_dir} is complete: nothing to resume")
        checkpoint = runs.load_checkpoint(run_dir / runs.CHECKPOINT)
        resolve_device(spec.train.device)
        data = load_data(spec.data)
        prepared = build(spec, data, console, run_dir.parent / CACHE)
        state = _checked_state(checkpoint, spec, run_dir)
        _check_training_state(state, prepared.model, spec.train, run_dir)
        try:
            prepared.model.load_state_dict(checkpoint["model"])
            for name, saved in checkpoint.get("technique_state", {}).items():
                prepared.techniques[name].restore_training_state(prepared.model, saved)
        except (KeyError, TypeError, RuntimeError) as error:
            reason = first_line(error)
            raise UsageError(f"checkpoint in {run_dir} does not fit its run: {reason}") from None
        console.print(
            f"resuming {run_dir} after epoch {state.epoch}/{spec.train.epochs}", highlight=False
        )
        return _execute(spec, prepared, run_dir, state)


def _checked_state(checkpoint: dict[str, Any], spec: RunSpec, run_dir: Path) -> TrainState:
    """The training state a checkpoint holds, if it is one this run could have written."""
    epoch, history = checkpoint.get("epoch"), checkpoint.get("history")
    valid = (
        isinstance(epoch, int)
        and not isinstance(epoch, bool)
        and 0 < epoch <= spec.train.epochs
        and isinstance(history, list)
        and len(history) == epoch
        and all(isinstance(record, dict) for record in history)
    )
    if not valid:
        raise UsageError(
            f"checkpoint in {run_dir} is corrupted: epoch {epoch!r} with "
            f"{len(history) if isinstance(history, list) else 'no'} epoch records"
        )
    try:
        kept = {k: v for k, v in checkpoint.items() if k not in ("model", "technique_state")}
        return TrainState(**kept)
    except TypeError as error:
        raise UsageError(f"checkpoint in {run_dir} is corrupted: {error}") from None


def _check_training_state(
    state: TrainState, model: torch.nn.Module, recipe: TrainConfig, run_dir: Path
) -> None:
    """The optimizer, schedule and random states a checkpoint holds load into this run's
    (on throwaway copies): a damaged one is named before anything trains."""
    try:
        optimizer = build_optimizer(model, recipe)
        optimizer.load_state_dict(state.optimizer)
        scheduler = build_scheduler(optimizer, recipe, 1)
        scheduler.load_state_dict(state.scheduler)
        with warnings.catch_warnings():  # a step before the optimizer's: the point here
            warnings.simplefilter("ignore")
            scheduler.step()
        for rng in (state.rng_cpu, state.rng_data):
            torch.Generator().set_state(rng)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as error:
        raise UsageError(
            f"checkpoint in {run_dir} is corrupted: its training state does not load "
            f"({first_line(error)})"
        ) from None


class RunFailed(UsageError):
    """A run that failed after its directory existed; the record says why (``reason``)."""

    def __init__(self, reason: str, run_dir: Path) -> None:
        super().__init__(f"{reason}; {run_dir} is marked failed (traceback in its error.log)")
        self.reason = reason


def _execute(
    spec: RunSpec, prepared: Prepared, run_dir: Path, state: TrainState, curves: bool = True
) -> RunOutcome:
    """Run ``_finish`` and record how it ended: completed, interrupted (Ctrl-C, SIGTERM:
    the last epoch's checkpoint is kept) or failed, with the reason."""
    data = prepared.context.data
    board = runs.TensorBoardLog(run_dir)

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
        if state.history:  # the epochs as a table, for spreadsheets and plotting tools
            columns = list(dict.fromkeys(key for record in state.history for key in record))
            runs.write_csv(run_dir / runs.HISTORY, state.history, columns)
            board.write(state.history)
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
            "technique_state": {
                name: technique.training_state(trained)
                for name, technique in prepared.techniques.items()
            },
        }
        runs.save_checkpoint(run_dir / runs.CHECKPOINT, payload)
        write_metrics("running")

    try:
        return _finish(spec, prepared, run_dir, state, write_metrics, checkpoint, curves)
    except TrainingInterrupted:
        stop = TrainingInterrupted(state.epoch)  # the run's epochs, whichever phase stopped
        stop.run_dir = run_dir
        _record_end(write_metrics, "interrupted")
        if state.history and curves:
            plot_curves(state.history, run_dir, spec.label)
        raise stop from None
    except KeyboardInterrupt:  # after training: profiling, saving
        _record_end(write_metrics, "interrupted")
        stop = TrainingInterrupted(state.epoch)
        stop.run_dir = run_dir
        raise stop from None
    except UsageError as error:
        _record_end(write_metrics, "failed", error=str(error))
        raise
    except Exception as error:  # a disk that is full, a label the data set cannot have
        reason = f"{type(error).__name__}: {first_line(error)}"
        with contextlib.suppress(OSError):
            (run_dir / "error.log").write_text(traceback.format_exc())
        _record_end(write_metrics, "failed", error=reason)
        raise RunFailed(reason, run_dir) from None


def _record_end(write_metrics: Callable[..., Any], status: str, **extra: Any) -> None:
    """Record how the run ended, if the disk still lets us."""
    with contextlib.suppress(OSError):
        write_metrics(status, **extra)


def _finish(
    spec: RunSpec,
    prepared: Prepared,
    run_dir: Path,
    state: TrainState,
    write_metrics: Callable[..., dict[str, Any]],
    checkpoint: Callable[[torch.nn.Module, TrainState], None],
    curves: bool,
) -> RunOutcome:
    """Train, apply the post-training techniques, measure, save, record."""
    model, context, techniques = prepared.model, prepared.context, prepared.techniques
    data, console = context.data, context.console
    write_metrics("running")
    if spec.train.init and spec.train.epochs and not state.history:
        # Where the weights start, before any step: the trained (or fitted) network.
        context.metrics["init_val_acc"] = _test_answers(model, context, recompute_bn=False)[0]
    state = train(
        model,
        data,
        spec.train,
        state,
        checkpoint,
        console,
        prepared.loss_term if prepared.terms else None,
        graph_obstacles=context.graph_obstacles,
        label=spec.label,
    )
    context.history = state.history  # post-training epochs (fine-tuning) continue it
    post_start = time.perf_counter()
    for term in prepared.terms:
        model = term.release(model)
    for use in sorted(spec.uses, key=lambda use: techniques[use.name].post_order):
        model = techniques[use.name].post_train(model, use.options, context)
    post_time = time.perf_counter() - post_start
    device = resolve_device(spec.train.device)
    # Statistics are recomputed for weights this run changed; a network trained elsewhere
    # (--init, no epochs) or only quantized after training is tested with its own.
    recompute_bn = bool(context.history) or any(techniques[u.name].restructures for u in spec.uses)
    final_acc, answers = _test_answers(model, context, recompute_bn)
    auxiliary = [p for use in spec.uses for p in techniques[use.name].auxiliary_parameters(model)]
    profile = profile_model(
        model, context.input_size, device, latency_repeats=20, auxiliary=auxiliary
    )
    reports: dict[str, Any] = dict(context.metrics)
    for use in spec.uses:
        reports.update(techniques[use.name].report(model, use.options, context))
    runs.save_weights(run_dir / runs.WEIGHTS, model.cpu())
    if state.history and curves:
        plot_curves(state.history, run_dir, spec.label)
    metrics = write_metrics(
        "completed",
        **profile.to_dict(),
        **reports,
        **_best(state.history, context.delivered_from, final_acc),
        final_val_acc=final_acc,
        test_correct=encode_answers(answers),
        train_time_s=sum(r["time_s"] for r in state.history if r.get("phase", "train") == "train"),
        # pruning, fine-tuning, calibration, QAT fine-tuning: the technique's own work
        post_time_s=post_time,
    )
    return RunOutcome(run_dir, metrics)


def _best(
    history: list[dict[str, Any]], delivered_from: int | None, final_acc: float
) -> dict[str, Any]:
    """The best top-1 of the delivered network: over the epochs that trained it as it is
    (after the last pruning step, say), or its final score when no epoch did."""
    delivered = [] if delivered_from is None else history[delivered_from:]
    if not delivered:
        return {"best_val_acc": final_acc, "best_epoch": None}
    best = max(delivered, key=lambda record: record["val_acc"])
    if final_acc > best["val_acc"]:
        return {"best_val_acc": final_acc, "best_epoch": None}
    return {"best_val_acc": best["val_acc"], "best_epoch": best["epoch"]}


def latency_side_by_side(outcomes: list[RunOutcome], repeats: int = 30) -> list[dict[str, Any]]:
    """The runs' metrics with batch-1 latencies measured now, side by side in this process
    (interleaved, median, threads stated). A run whose network cannot be reloaded keeps
    the latency it recorded, marked as carried over."""
    models, loadable = [], []
    for outcome in outcomes:
        try:
            models.append(load(outcome.run_dir))
            loadable.append(outcome)
        except RunLoadError:
            continue
    measured: dict[Path, float] = {}
    if len(models) == len(outcomes):  # all or nothing: a lone figure compares with nothing
        size = outcomes[0].metrics["input_size"]  # the same recipe, so the same input
        times = latencies_ms(models, torch.randn(1, 3, size, size), repeats)
        measured = dict(zip([o.run_dir for o in loadable], times, strict=True))
    results = []
    for outcome in outcomes:
        metrics = dict(outcome.metrics)
        if outcome.run_dir in measured:
            metrics.update(
                latency_ms=measured[outcome.run_dir],
                device="cpu",
                threads=torch.get_num_threads(),
                latency_source="side by side",
            )
        else:
            metrics["latency_source"] = f"carried over from {outcome.run_dir.name}"
        results.append(metrics)
    return results


def _test_answers(
    model: torch.nn.Module, context: RunContext, recompute_bn: bool
) -> tuple[float, torch.Tensor]:
    """Top-1 of the delivered network (after any pruning or quantization) on the test
    split, and which test images it gets right."""
    trainer = Trainer(model, context.data, context.train, torch.Generator())
    _, correct = trainer.test_answers(recompute_bn)
    return int(correct.sum()) / len(correct), correct


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
        if not isinstance(config, dict) or not isinstance(metrics, dict):
            continue  # not a run's records
        if config.get("techniques", []) != baseline_record(reference):
            continue
        same_data = all(config["data"].get(k) == getattr(spec.data, k) for k in MATCH_DATA)
        same_train = all(config["train"].get(k) == getattr(spec.train, k) for k in MATCH_TRAIN)
        if same_data and same_train and metrics.get("status") == "completed":
            return RunOutcome(run_dir, metrics)
    return None


CACHE = "cache"  # under a results root: networks trained once, shared by later runs


def trained_once(spec: RunSpec, cache: Path, console: Console) -> RunOutcome:
    """The completed run of ``spec`` in ``cache``, trained now if none is there.

    Train once, compress many times: studies share one trained backbone among their
    pruning and post-training-quantization trials, a distillation teacher is trained once,
    and reference models once for every study with the same data and recipe. The
    directory is named by a hash of the spec's record; a lock keeps two processes from
    training the same network at once.
    """
    record = json.dumps(spec.record(), sort_keys=True)
    key = hashlib.sha256(record.encode()).hexdigest()[:12]
    run_dir = cache / f"{spec.label}-{spec.data.dataset}-{key}"
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / f".{run_dir.name}.lock").open("w") as lock:
        lock_exclusively(lock)
        try:
            metrics = runs.read_json(run_dir / runs.METRICS)
        except UsageError:
            metrics = {}
        if metrics.get("status") == "completed":
            console.print(f"reusing {run_dir}", highlight=False)
            return RunOutcome(run_dir, metrics)
        if run_dir.exists():  # an attempt that did not finish
            shutil.rmtree(run_dir)
        return start(spec, cache.parent, console, cache, run_dir)


def run(
    techniques: str,
    out: str | Path = "runs",
    preset: str | None = None,
    console: Console | None = None,
    cache: str | Path | None = None,
    curves: bool = True,
    **options: Any,
) -> RunOutcome:
    """Python's ``compress run``: ``run("ghost+prune", backbone="vgg16", ratio=0.5)``.

    Args:
        techniques: technique names joined by '+', in any order.
        out: the results root; the run directory is made under it.
        preset: a protocol by name (``seed``, ``paper``); options override it.
        console: where progress goes (default: stderr).
        cache: networks trained once (a distillation teacher; default ``out/cache``).
        curves: draw the training curves, ``accuracy.png`` and ``loss.png`` (a third of a
            short run's time on a CPU; a study's trials skip them).
        **options: any option of the techniques, the data or the training recipe;
            ``model``, ``backbone`` and ``teacher`` may be your own ``nn.Module``
            (``compress.modules``): a model as it is, weights and all, a trained teacher.

    Returns:
        A ``RunOutcome`` with the run directory and its final metrics.
    """
    roots = Path(cache) if cache else Path(out) / CACHE
    spec = RunSpec.from_options(techniques, named_modules(options, roots), preset)
    return start(
        spec,
        Path(out),
        console or stderr_console(),
        Path(cache) if cache else None,
        curves=curves,
    )
