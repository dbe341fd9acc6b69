"""``compress study pareto``: which technique buys the most accuracy per MAC, param or ms.

Each trial picks a technique from the candidates, draws that technique's options from its
declared search space, trains it on the backbone with the study's data and recipe, and
reports the chosen objectives. A trial that fails (bad combination, divergence) is kept
as FAIL with its error, and the study goes on. The same storage and name continue a study.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import re
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from rich.console import Console
from rich.progress import Progress

from compress.engine import TrainingInterrupted, resolve_device
from compress.errors import UsageError, first_line
from compress.options import Options, option, parse_value
from compress.registry import get_entry
from compress.reports import stderr_console
from compress.runner import CACHE, RunFailed, preflight, run, trained_once
from compress.runs import check_root, fail_abandoned, write_csv
from compress.spec import RunSpec
from compress.techniques import get_technique, parse_composition
from compress.turns import Turns
from studies.objectives import OBJECTIVES, objectives_help, recorded
from studies.space import suggest
from studies.storage import (
    check_concurrency,
    check_storage,
    claim,
    default_storage,
    fail_orphaned_trials,
    masked,
    open_storage,
)
from studies.worker import work

SAMPLERS = ("tpe", "nsga2")
# Seconds a worker has to end after Ctrl-C before the study sends it a SIGINT of its own:
# the signal may have reached the study process alone (``kill -INT PID``).
GRACE_S = 3
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass
class StudySpec(Options):
    """A study: candidate techniques on one backbone, objectives, budget and storage; the
    data and training options every trial shares are ``fixed``."""

    techniques: tuple[str, ...] = option(
        ("ghost", "prune", "quantize", "distill"),
        "candidate techniques, comma-separated; compositions with '+' (ghost+prune)",
    )
    backbone: str = option("resnet20", "the model every technique starts from")
    objectives: tuple[str, ...] = option(
        ("accuracy", "macs"),
        f"two or three of: {objectives_help()}",
        choices=tuple(OBJECTIVES),
    )
    trials: int = option(10, "trials to add", low=1)
    study_name: str = option("pareto", "the study's name (letters, digits, '.', '_', '-')")
    storage: str | None = option(
        None,
        "Optuna storage URL (default: OUT/NAME.db, or OUT/NAME.journal for --workers or "
        "--concurrent)",
    )
    sampler: str = option("tpe", "Optuna's sampler", choices=SAMPLERS)
    sampler_seed: int | None = option(
        None,
        "seed of the sampler, for a reproducible study; a continued study still draws new "
        "trials (default: fresh in each process)",
        low=0,
    )
    baselines: tuple[str, ...] = option(
        ("ghostnet", "mobilenetv3_large", "mobilenetv3_small"),
        "reference models (timm:NAME too) trained once on the same data and recipe",
    )
    workers: int = option(
        1, "worker processes sharing the trials (a journal file; a GPU each if several)", low=1
    )
    concurrent: int = option(
        1,
        "trials each process trains at once, taking turns step by step (a CUDA stream each, "
        "so that their kernels overlap on one GPU); a trial's numbers are those it gets alone",
        low=1,
    )
    fix: tuple[str, ...] = option(
        (),
        "technique options every trial takes as given instead of drawing them, as "
        "NAME=VALUE, comma-separated (e.g. teacher=run/dir,kind=attention)",
    )
    out: str = option("runs/studies", "results root")
    fixed: dict[str, Any] = field(default_factory=dict)  # data and training options
    worker_index: int = 0

    def check(self) -> None:
        if not NAME.fullmatch(self.study_name):
            raise UsageError(
                f"--study-name {self.study_name!r} must be a name (letters, digits, '.', '_', "
                "'-'), not a path: the study lives in --out"
            )
        if self.directory.exists() and not self.directory.is_dir():
            raise UsageError(
                f"--study-name {self.study_name!r}: {self.directory} is a file (another "
                "study's storage?); the study needs that name for its folder"
            )
        if not self.techniques:
            raise UsageError("--techniques names no technique (e.g. ghost,prune)")
        for technique in self.techniques:
            parse_composition(technique)  # unknown names fail here, before any training
        if not 2 <= len(self.objectives) <= 3 or len(set(self.objectives)) != len(self.objectives):
            raise UsageError("give two or three different objectives, e.g. accuracy,macs")
        timed = [name for name in self.objectives if OBJECTIVES[name].timed]
        if timed and self.workers * self.concurrent > 1:
            raise UsageError(
                f"--objectives {','.join(timed)} times each trial's network: with --workers "
                "or --concurrent the other trials' training would be timed with it (give "
                "--workers 1 --concurrent 1)"
            )
        for model in (self.backbone, *self.baselines):
            get_entry(model)
        RunSpec.from_options("baseline", {"model": self.backbone, **self.fixed})
        self.given_options()
        check_concurrency(self.storage_url, self.workers * self.concurrent)

    def given_options(self) -> dict[str, Any]:
        """``--fix``'s options by name, each read as the type its technique declares."""
        declared = {
            f.name: (f, config)
            for technique in self.techniques
            for name in parse_composition(technique)
            for config in [get_technique(name).config_cls]
            for f in fields(config)
            if "help" in f.metadata
        }
        given = {}
        for item in self.fix:
            name, sign, text = item.partition("=")
            name = name.strip().replace("-", "_")
            if not sign or name not in declared:
                known = ", ".join(sorted(declared))
                raise UsageError(
                    f"--fix {item!r}: give NAME=VALUE with NAME an option of the study's "
                    f"techniques ({known})"
                )
            given[name] = parse_value(declared[name][1], name, text.strip())
        return given

    @property
    def root(self) -> Path:
        return Path(self.out)

    @property
    def directory(self) -> Path:
        return self.root / self.study_name

    @property
    def cache(self) -> Path:
        """Networks trained once for every study under ``out``: backbones, baselines,
        distillation teachers."""
        return self.root / CACHE

    @property
    def storage_url(self) -> str:
        return self.storage or default_storage(
            self.root, self.study_name, self.workers * self.concurrent
        )

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o].direction for o in self.objectives]


def trial_options(
    trial: optuna.Trial, technique: str, backbone: str, given: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The technique's searched options, with the backbone wired into its builder: each
    technique says how it takes the backbone, then draws the options that apply and that
    the study did not fix (``given``, which every trial takes as they are)."""
    techniques = [get_technique(name) for name in parse_composition(technique)]
    given = given or {}
    options: dict[str, Any] = {}
    for each in techniques:
        options.update(each.on_backbone(backbone))
    for each in techniques:
        declared = {f.name for f in fields(each.config_cls)}
        options.update({k: v for k, v in given.items() if k in declared})
        options.update(suggest(trial, each.name, each.config_cls, options, skip=set(given)))
    return options


def sampler_seed(spec: StudySpec, trials_so_far: int) -> int | None:
    """The seed this process samples with: ``None`` (fresh) unless the user gave one;
    then mixed with the study's size and the worker's index, so that a rerun, a second
    process or a second worker draws new trials, and the same command on the same study
    state draws the same ones."""
    if spec.sampler_seed is None:
        return None
    mixed = np.random.SeedSequence([spec.sampler_seed, trials_so_far, spec.worker_index])
    return int(mixed.generate_state(1)[0])


def _sampler(spec: StudySpec, seed: int | None) -> optuna.samplers.BaseSampler:
    if spec.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def open_study(spec: StudySpec) -> optuna.Study:
    check_root(spec.root)
    check_storage(spec.storage_url)
    spec.root.mkdir(parents=True, exist_ok=True)
    storage = open_storage(spec.storage_url)
    try:
        study = optuna.create_study(
            study_name=spec.study_name,
            storage=storage,
            directions=spec.directions,
            load_if_exists=True,
        )
    except Exception as error:  # a damaged journal or database: Optuna's errors vary
        reason = masked(first_line(error))
        raise UsageError(
            f"cannot open study storage {masked(spec.storage_url)}: {reason}"
        ) from None
    study.sampler = _sampler(spec, sampler_seed(spec, len(study.trials)))
    stored = study.user_attrs.get("objectives")
    same_directions = study.directions == [
        optuna.study.StudyDirection[d.upper()] for d in spec.directions
    ]
    if not same_directions or (stored is not None and list(stored) != list(spec.objectives)):
        theirs = ",".join(stored) if stored else f"{len(study.directions)} other objectives"
        raise UsageError(
            f"study {spec.study_name!r} optimises {theirs}: continue it with those "
            f"--objectives, or give a new --study-name"
        )
    study.set_user_attr("objectives", spec.objectives)
    with warnings.catch_warnings():  # "experimental" since Optuna 3.2
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([OBJECTIVES[name].label for name in spec.objectives])
    fail_orphaned_trials(study)  # trials whose worker died since the study was last open
    fail_abandoned(spec.directory / "trials")  # and the run directories they left running
    return study


def reference_runs(spec: StudySpec) -> dict[str, dict[str, Any]]:
    """The reference points' names and run options: the baselines on the same data and
    recipe (from their own start: ``--init`` holds the backbone's weights). A study of a
    trained backbone (``--init``) also shows it as loaded, and fine-tuned with the trials'
    recipe, uncompressed: the control that tells what compression costs from what the
    extra training gives."""
    references = {}
    if "init" in spec.fixed:
        backbone = {**spec.fixed, "model": spec.backbone}
        references[f"{spec.backbone} (trained)"] = {**backbone, "epochs": 0}
        references[f"{spec.backbone} (fine-tuned)"] = backbone
    for model in spec.baselines:
        options = {**spec.fixed, "model": model}
        if "init" in spec.fixed:
            if model == spec.backbone:
                continue
            del options["init"]
        references[model] = options
    return references


def run_baselines(spec: StudySpec, study: optuna.Study, console: Console) -> None:
    """Reference points: trained once for every study in the same results root (the
    cache), and recorded once per study."""
    done = {b["model"] for b in study.user_attrs.get("baselines", [])}
    points = list(study.user_attrs.get("baselines", []))
    for name, options in reference_runs(spec).items():
        if name in done:
            continue
        outcome = trained_once(RunSpec.from_options("baseline", options), spec.cache, console)
        points.append(
            {
                "model": name,
                **recorded(outcome.metrics, outcome.run_dir, spec.objectives),
                "run_dir": str(outcome.run_dir),
            }
        )
        study.set_user_attr("baselines", points)


class TrialLines:
    """One line per finished trial, as Optuna's callback: its number among this command's
    trials, technique and options, objectives (or why it failed), its time and the time
    left at the pace so far. It replaces Optuna's own log (raw floats, and a traceback
    for every failed trial)."""

    def __init__(self, spec: StudySpec, console: Console, prefix: str = "") -> None:
        self.spec, self.console, self.prefix = spec, console, prefix
        self.started = time.monotonic()
        self.done = 0

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.done += 1
        params = {k.split(".")[-1]: v for k, v in trial.params.items() if k != "technique"}
        options = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
        )
        what = f"{trial.params.get('technique', '?')}({options})"
        if trial.state == optuna.trial.TrialState.COMPLETE:
            values = trial.user_attrs.get("metrics", {})
            outcome = ", ".join(
                f"{OBJECTIVES[n].label} {OBJECTIVES[n].cell(values[n], values)}"
                for n in self.spec.objectives
            )
        else:
            word = "refused" if trial.state == optuna.trial.TrialState.PRUNED else "failed"
            outcome = f"{word}: {trial.user_attrs.get('error', '')}"
        elapsed = time.monotonic() - self.started
        left = elapsed / self.done * (self.spec.trials - self.done)
        took = (trial.duration.total_seconds() if trial.duration else 0) / 60
        self.console.print(
            f"{self.prefix}trial {trial.number} ({self.done}/{self.spec.trials}) {what}: "
            f"{outcome}; {took:.1f} min, about {left / 60:.0f} min left",
            highlight=False,
            soft_wrap=True,
        )


def optimize(
    spec: StudySpec,
    console: Console,
    baselines: bool = True,
    lines: Console | None = None,
    prefix: str = "",
) -> optuna.Study:
    """Run ``spec.trials`` more trials in this process (and the baselines); return the study.
    With ``spec.concurrent`` > 1, that many trials train at once, taking turns. Each
    finished trial is a line on ``lines`` (default: ``console``), after ``prefix``."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # TrialLines says what it would
    study = open_study(spec)
    if baselines:
        run_baselines(spec, study, console)
    callback = TrialLines(spec, lines or console, prefix)
    if spec.concurrent == 1:
        objective = trial_objective(spec, study, console)
        study.optimize(objective, spec.trials, catch=(Exception,), callbacks=[callback])
        return study
    return optimize_packed(spec, study, console, callback)


def optimize_packed(
    spec: StudySpec, study: optuna.Study, console: Console, callback: TrialLines
) -> optuna.Study:
    """``spec.trials`` trials, ``spec.concurrent`` at a time in threads of this process that
    take turns step by step (``compress.turns``); a thread takes the next trial when its
    own ends. Ctrl-C stops every trial at its next step: each is checkpointed and recorded
    as failed before the interrupt leaves."""
    turns = Turns()
    device = resolve_device(spec.fixed.get("device", "auto"))
    objective = trial_objective(spec, study, stderr_console(quiet=True), turns, device)
    drawn = itertools.count()  # trials handed out; next() is atomic
    finished: list[int] = []  # trials ended
    ended: list[str] = []  # threads ended (not Thread.join: Ctrl-C can spoil its state)
    errors: list[BaseException] = []

    def trials_in_turn() -> None:
        try:
            while not turns.stopped and next(drawn) < spec.trials:
                study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[callback])
                finished.append(1)
        except KeyboardInterrupt:  # the trial is recorded as failed; the study stops
            pass
        except BaseException as error:  # e.g. the storage failed: the study must say so
            errors.append(error)
            turns.stop()
        finally:
            ended.append(threading.current_thread().name)

    threads = [
        threading.Thread(target=trials_in_turn, name=f"trials-{index}")
        for index in range(min(spec.concurrent, spec.trials))
    ]
    for thread in threads:
        thread.start()
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"{len(threads)} trials at a time", total=spec.trials)
            while len(ended) < len(threads):
                time.sleep(0.2)
                progress.update(task, completed=len(finished))
    except KeyboardInterrupt:
        turns.stop()
        while len(ended) < len(threads):  # each trial ends at its next step, recorded
            time.sleep(0.05)
        raise
    if errors:
        raise errors[0]
    return study


def trial_objective(
    spec: StudySpec,
    study: optuna.Study,
    console: Console,
    turns: Turns | None = None,
    device: str | torch.device = "cpu",
) -> Callable[[optuna.Trial], tuple[float, ...]]:
    """The function Optuna calls per trial: draw a technique and its options, train, and
    return the objectives; with ``turns``, the trial takes part in the rotation on ``device``."""

    def objective(trial: optuna.Trial) -> tuple[float, ...]:
        claim(trial)
        fail_orphaned_trials(study)
        technique = trial.suggest_categorical("technique", spec.techniques)
        given = spec.given_options()
        options = {**spec.fixed, **trial_options(trial, technique, spec.backbone, given)}
        try:
            plan = RunSpec.from_options(technique, options)
            if len(plan.uses) > 1 and plan.trains_like_its_backbone and "init" in spec.fixed:
                options.update(epochs=0)  # the trained weights are the backbone: no step more
            elif len(plan.uses) > 1 and plan.trains_like_its_backbone:
                preflight(plan)
                # Post-training techniques only: start from the backbone trained once.
                backbone = trained_once(plan.backbone(), spec.cache, console)
                options.update(init=str(backbone.run_dir), epochs=0)
            outcome = run(  # no curves: a study has its own plots, and trials are many
                technique,
                spec.directory / "trials",
                console=console,
                cache=spec.cache,
                curves=False,
                **options,
            )
        except RunFailed as error:  # failed while training: a failed trial
            trial.set_user_attr("error", error.reason)
            raise
        except UsageError as error:  # refused before training, e.g. prune+quantize drew qat
            trial.set_user_attr("error", f"options that do not combine: {error}")
            raise optuna.TrialPruned(str(error)) from None
        except (TrainingInterrupted, KeyboardInterrupt):
            trial.set_user_attr("error", "interrupted (Ctrl-C): the study stopped here")
            raise KeyboardInterrupt from None  # Ctrl-C ends the study, not just the trial
        except Exception as error:
            trial.set_user_attr("error", f"{type(error).__name__}: {error}")
            raise
        try:
            values = recorded(outcome.metrics, outcome.run_dir, spec.objectives)
        except UsageError as error:  # e.g. ort_latency of a 1-bit network: no ONNX form
            trial.set_user_attr("error", f"cannot measure its objectives: {error}")
            raise
        trial.set_user_attr("metrics", {**values, "run_dir": str(outcome.run_dir)})
        return tuple(values[name] for name in spec.objectives)

    if turns is None:
        return objective

    def packed(trial: optuna.Trial) -> tuple[float, ...]:
        with turns.seat(device):
            return objective(trial)

    return packed


def worker_specs(spec: StudySpec) -> list[StudySpec]:
    """Each worker's share of the trials (all of them together: exactly ``spec.trials``),
    its own sampler seed, and its own GPU when the machine has several."""
    device = spec.fixed.get("device", "auto")
    gpus = torch.cuda.device_count() if device in ("auto", "cuda") else 0
    share, extra = divmod(spec.trials, spec.workers)
    specs = []
    for index in range(min(spec.workers, spec.trials)):
        fixed = {**spec.fixed, "device": f"cuda:{index % gpus}"} if gpus > 1 else spec.fixed
        trials = share + (index < extra)
        storage = spec.storage_url
        specs.append(
            replace(
                spec, trials=trials, workers=1, storage=storage, fixed=fixed, worker_index=index
            )
        )
    return specs


def optimize_parallel(spec: StudySpec, console: Console) -> optuna.Study:
    """``spec.trials`` more trials over ``spec.workers`` processes sharing the storage."""
    study = open_study(spec)
    run_baselines(spec, study, console)
    before = len(study.trials)
    threads = max(1, (os.cpu_count() or 1) // spec.workers)
    context = multiprocessing.get_context("spawn")  # no forked CUDA or thread-pool state
    processes = [  # daemons: never left running once this process ends
        context.Process(
            target=work, args=(asdict(worker), threads), name=f"worker-{index}", daemon=True
        )
        for index, worker in enumerate(worker_specs(spec))
    ]
    for process in processes:
        process.start()
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"{len(processes)} workers", total=spec.trials)
            while any(process.is_alive() for process in processes):
                # A dead worker's trial is failed with its reason at once, before
                # Optuna's heartbeat check would fail it without one.
                fail_orphaned_trials(study)
                states = [t.state for t in study.get_trials(deepcopy=False)[before:]]
                progress.update(task, completed=sum(s.is_finished() for s in states))
                time.sleep(1)
    except KeyboardInterrupt:  # Ctrl-C reached the workers too: let them record it
        for process in processes:
            process.join(timeout=GRACE_S)
            if process.is_alive():
                os.kill(process.pid, signal.SIGINT)
                process.join(timeout=60)
            if process.is_alive():
                process.terminate()
                process.join(timeout=30)
        raise
    for process in processes:
        process.join()
        if process.exitcode:
            console.print(
                f"{process.name} (pid {process.pid}) ended with exit code {process.exitcode}; "
                "its trial is marked failed and queued again: run the same command to go on",
                highlight=False,
            )
    fail_orphaned_trials(study)
    fail_abandoned(spec.directory / "trials")
    return study


def report(study: optuna.Study, directory: Path, console: Console) -> list[Path]:
    """Print the Pareto front over the trials and the reference networks together (a
    column per objective, ordered by the first cost), then the references off it; write
    the plots, the CSV/JSON export and the printed table (``front.csv``)."""
    from rich.table import Table

    from studies.pareto import export, pareto_front, plot_fronts, trial_rows

    names = study.user_attrs.get("objectives")
    if not isinstance(names, list | tuple) or not names or any(n not in OBJECTIVES for n in names):
        raise UsageError(
            f"study {study.study_name!r} was not made by `compress study pareto`: it records "
            "no objectives of compress's"
        )
    objectives = [OBJECTIVES[name] for name in names]
    rows = trial_rows(study)
    done = [row for row in rows if row["state"] == "COMPLETE"]
    baselines = study.user_attrs.get("baselines", [])
    references = [
        {**point, "trial": "reference", "technique": point["model"], "options": {}}
        for point in baselines
    ]
    shown_rows = done + references
    directions = [objective.direction for objective in objectives]
    front = pareto_front([[row[o.name] for o in objectives] for row in shown_rows], directions)
    failed = sum(row["state"] == "FAIL" for row in rows)
    table = Table(
        title=f"Pareto front of {study.study_name!r}, trials and references together "
        f"({len(done)} trials complete, {failed} failed, "
        f"{len(rows) - len(done) - failed} refused before training)"
    )
    header = ["trial", "technique", "options", *(o.label for o in objectives), "on the front"]
    for column in header:
        table.add_column(column)
    cost = next((o for o in objectives if o.direction == "minimize"), objectives[0])
    off_front = [i for i in range(len(done), len(shown_rows)) if i not in front]
    shown = []
    for index in [*sorted(front, key=lambda i: shown_rows[i][cost.name]), *off_front]:
        row = shown_rows[index]
        options = ", ".join(
            f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
            for k, v in row["options"].items()
        )
        cells = [o.cell(row[o.name], row) for o in objectives]
        shown.append([str(row["trial"]), row["technique"], options, *cells])
        shown[-1].append("yes" if index in front else "")
        table.add_row(*shown[-1])
    console.print(table)
    directory.mkdir(parents=True, exist_ok=True)
    names = [objective.name for objective in objectives]
    written = export(rows, directory, names)
    front_csv = directory / "front.csv"
    write_csv(front_csv, [dict(zip(header, row, strict=True)) for row in shown], header)
    return [*written, front_csv, *plot_fronts(rows, baselines, names, directory, study.study_name)]
