"""``compress study pareto``: which technique buys the most accuracy per MAC, param or ms.

Each trial picks a technique from the candidates, draws that technique's options from its
declared search space, trains it on the backbone with the study's data and recipe, and
reports the chosen objectives. A trial that fails (bad combination, divergence) is kept
as FAIL with its error, and the study goes on. The same storage and name continue a study.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from rich.console import Console
from rich.progress import Progress

from compress.engine import TrainingInterrupted
from compress.errors import UsageError, first_line
from compress.runner import CACHE, RunFailed, RunSpec, preflight, run, trained_once
from compress.runs import check_root
from compress.techniques import get_technique, parse_composition
from studies.pareto import OBJECTIVES, objective_value
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
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
RECORDED = ("accuracy", "macs", "params", "bops", "latency")


@dataclass
class StudySpec:
    """A study: candidate techniques on one backbone, objectives, budget and storage."""

    techniques: list[str]
    backbone: str
    objectives: list[str]
    trials: int
    out: Path
    study_name: str = "pareto"
    storage: str | None = None
    sampler: str = "tpe"
    # None: a fresh seed in every process. Given: reproducible, and still new trials when
    # a study continues (the seed mixes in the trials already there and the worker).
    sampler_seed: int | None = None
    baselines: list[str] = field(default_factory=list)
    fixed: dict[str, Any] = field(default_factory=dict)  # data and training options
    workers: int = 1
    worker_index: int = 0

    def __post_init__(self) -> None:
        if not NAME.fullmatch(self.study_name):
            raise UsageError(
                f"--study-name {self.study_name!r} must be a name (letters, digits, '.', '_', "
                "'-'), not a path: the study lives in --out"
            )
        if not self.techniques:
            raise UsageError("--techniques names no technique (e.g. ghost,prune)")
        for technique in self.techniques:
            parse_composition(technique)  # unknown names fail here, before any training
        unknown = [o for o in self.objectives if o not in OBJECTIVES]
        if unknown:
            raise UsageError(
                f"unknown objective {unknown[0]!r} (choose from {', '.join(OBJECTIVES)})"
            )
        if not 2 <= len(self.objectives) <= 3 or len(set(self.objectives)) != len(self.objectives):
            raise UsageError("give two or three different objectives, e.g. accuracy,macs")
        if self.sampler not in SAMPLERS:
            raise UsageError(f"--sampler must be one of {', '.join(SAMPLERS)}")
        if self.trials < 1:
            raise UsageError("--trials must be >= 1")
        if self.workers < 1:
            raise UsageError("--workers must be >= 1")
        check_concurrency(self.storage_url, self.workers)

    @property
    def directory(self) -> Path:
        return self.out / self.study_name

    @property
    def cache(self) -> Path:
        """Networks trained once for every study under ``out``: backbones, baselines,
        distillation teachers."""
        return self.out / CACHE

    @property
    def storage_url(self) -> str:
        return self.storage or default_storage(self.out, self.study_name, self.workers)

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o][1] for o in self.objectives]


def trial_options(trial: optuna.Trial, technique: str, backbone: str) -> dict[str, Any]:
    """The technique's searched options, with the backbone wired into its builder: each
    technique says how it takes the backbone, then draws the options that apply."""
    techniques = [get_technique(name) for name in parse_composition(technique)]
    options: dict[str, Any] = {}
    for each in techniques:
        options.update(each.on_backbone(backbone))
    for each in techniques:
        options.update(suggest(trial, each.name, each.config_cls, options))
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
    check_root(spec.out)
    check_storage(spec.storage_url)
    spec.out.mkdir(parents=True, exist_ok=True)
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
    if study.directions != [optuna.study.StudyDirection[d.upper()] for d in spec.directions]:
        raise UsageError(f"study {spec.study_name!r} exists with other objectives")
    study.set_user_attr("objectives", spec.objectives)
    fail_orphaned_trials(study)  # trials whose worker died since the study was last open
    return study


def run_baselines(spec: StudySpec, study: optuna.Study, console: Console) -> None:
    """Reference points on the same data and recipe: trained once for every study in the
    same results root (the cache), and recorded once per study."""
    done = {b["model"] for b in study.user_attrs.get("baselines", [])}
    points = list(study.user_attrs.get("baselines", []))
    for model in spec.baselines:
        if model in done:
            continue
        reference = RunSpec.from_options("baseline", {**spec.fixed, "model": model})
        outcome = trained_once(reference, spec.cache, console)
        points.append(
            {"model": model, **_recorded(outcome.metrics), "run_dir": str(outcome.run_dir)}
        )
        study.set_user_attr("baselines", points)


def _recorded(metrics: dict[str, Any]) -> dict[str, float]:
    return {name: objective_value(metrics, name) for name in RECORDED}


def optimize(spec: StudySpec, console: Console, baselines: bool = True) -> optuna.Study:
    """Run ``spec.trials`` more trials in this process (and the baselines); return the study."""
    study = open_study(spec)
    if baselines:
        run_baselines(spec, study, console)

    def objective(trial: optuna.Trial) -> tuple[float, ...]:
        claim(trial)
        fail_orphaned_trials(study)
        technique = trial.suggest_categorical("technique", spec.techniques)
        options = {**spec.fixed, **trial_options(trial, technique, spec.backbone)}
        try:
            plan = RunSpec.from_options(technique, options)
            if len(plan.uses) > 1 and plan.trains_like_its_backbone:
                preflight(plan)
                # Post-training techniques only: start from the backbone trained once.
                backbone = trained_once(plan.backbone(), spec.cache, console)
                options.update(init=str(backbone.run_dir), epochs=0)
            outcome = run(
                technique, spec.directory / "trials", console=console, cache=spec.cache, **options
            )
        except RunFailed as error:  # failed while training: a failed trial
            trial.set_user_attr("error", error.reason)
            raise
        except UsageError as error:  # refused before training, e.g. prune+quantize drew qat
            trial.set_user_attr("error", f"options that do not combine: {error}")
            raise optuna.TrialPruned(str(error)) from None
        except TrainingInterrupted:
            raise KeyboardInterrupt from None  # Ctrl-C ends the study, not just the trial
        except Exception as error:
            trial.set_user_attr("error", f"{type(error).__name__}: {error}")
            raise
        recorded = _recorded(outcome.metrics)
        trial.set_user_attr("metrics", {**recorded, "run_dir": str(outcome.run_dir)})
        return tuple(recorded[name] for name in spec.objectives)

    study.optimize(objective, n_trials=spec.trials, catch=(Exception,))
    return study


def worker_specs(spec: StudySpec) -> list[StudySpec]:
    """Each worker's share of the trials (all of them together: exactly ``spec.trials``),
    its own sampler seed, and its own GPU when the machine has several."""
    import torch

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
                states = [t.state for t in study.get_trials(deepcopy=False)[before:]]
                progress.update(task, completed=sum(s.is_finished() for s in states))
                time.sleep(1)
    except KeyboardInterrupt:  # Ctrl-C reached the workers too: let them record it
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():  # a worker that missed it (not in this process group)
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
    return study


def report(study: optuna.Study, directory: Path, console: Console) -> list[Path]:
    """Print the Pareto-optimal trials; write the plot and the CSV/JSON export."""
    from rich.table import Table

    from studies.pareto import export, pareto_front, plot_front, trial_rows

    objectives = study.user_attrs.get("objectives", [])
    rows = trial_rows(study)
    done = [row for row in rows if row["state"] == "COMPLETE"]
    directions = [OBJECTIVES[o][1] for o in objectives]
    front = pareto_front([[row[o] for o in objectives] for row in done], directions)
    failed = sum(row["state"] == "FAIL" for row in rows)
    table = Table(
        title=f"Pareto-optimal trials of {study.study_name!r} ({len(done)} complete, "
        f"{failed} failed, {len(rows) - len(done) - failed} refused before training)"
    )
    for column in ("trial", "technique", "options", "top-1", "MACs", "params", "latency"):
        table.add_column(column)
    for index in sorted(front, key=lambda i: done[i]["macs"]):
        row = done[index]
        options = ", ".join(
            f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
            for k, v in row["options"].items()
        )
        table.add_row(
            str(row["trial"]),
            row["technique"],
            options,
            f"{100 * row['accuracy']:.2f}%",
            f"{row['macs'] / 1e6:.2f} M",
            f"{row['params'] / 1e6:.3f} M",
            f"{row['latency']:.2f} ms",
        )
    console.print(table)
    directory.mkdir(parents=True, exist_ok=True)
    written = export(rows, directory, objectives)
    plot = directory / "pareto.png"
    plot_front(rows, study.user_attrs.get("baselines", []), objectives, plot, study.study_name)
    return [*written, plot]
