"""The ``compress`` command line: one sub-command per job, errors as one line, exit code 2."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from rich.console import Console

from compress import runner, runs
from compress.engine import TrainConfig, TrainingDiverged, TrainingInterrupted, resolve_device
from compress.errors import UsageError
from compress.measure import ESTIMATED, MEASURED, profile_model
from compress.options import add_arguments, explicit, flag
from compress.registry import create_model, get_entry, list_models
from compress.reports import console, error_console, profile_table, run_table
from compress.runner import PRESETS, DataConfig, RunSpec
from compress.techniques import get_technique, list_techniques, parse_composition


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _model_options(names: Sequence[str], options: dict[str, object]) -> dict[str, dict]:
    """Give each model the options it takes; an option that no model takes is an error."""
    given = {key: value for key, value in options.items() if value is not None}
    accepted = {name: set(get_entry(name).options) for name in names}
    for key in given:
        if not any(key in taken for taken in accepted.values()):
            raise UsageError(f"no model among {', '.join(names)} takes option --{key}")
    return {name: {k: v for k, v in given.items() if k in accepted[name]} for name in names}


def cmd_profile(args: argparse.Namespace) -> None:
    options = {"width": args.width, "s": args.s, "d": args.d}
    per_model = _model_options(args.models, options)
    device = resolve_device(args.device)
    profiles = []
    for name in args.models:
        entry = get_entry(name)
        model = create_model(name, num_classes=args.num_classes, **per_model[name])
        size = args.input_size or entry.input_size
        try:
            profiles.append(profile_model(model, size, device, args.repeats))
        except RuntimeError as error:
            reason = str(error).strip().splitlines()[0]
            raise UsageError(f"input size {size} is too small for {name}: {reason}") from None
    if args.json:
        records = [
            {
                "model": name,
                "options": per_model[name],
                **profile.to_dict(),
                "measured": list(MEASURED),
                "estimated": list(ESTIMATED),
            }
            for name, profile in zip(args.models, profiles, strict=True)
        ]
        print(json.dumps(records, indent=2))
    else:
        console.print(profile_table(args.models, profiles))


def cmd_list(args: argparse.Namespace) -> None:
    from rich.table import Table

    table = Table(title="Techniques (compose them: compress run ghost+prune)")
    for column in ("technique", "stage", "what it does", "options"):
        table.add_column(column)
    for name in list_techniques():
        technique = get_technique(name)
        options = "\n".join(
            f"{flag(f.name)} ({f.default}): {f.metadata['help']}"
            for f in dataclasses.fields(technique.config_cls)
        )
        table.add_row(name, technique.stage, technique.summary, options)
    console.print(table)


def cmd_models(args: argparse.Namespace) -> None:
    from rich.table import Table

    table = Table(title="Registered models (any timm model also works as timm:NAME)")
    for column in ("name", "input", "classes", "options", "description"):
        table.add_column(column)
    for name in list_models():
        entry = get_entry(name)
        table.add_row(
            name,
            str(entry.input_size),
            str(entry.num_classes),
            ", ".join(entry.options),
            entry.description,
        )
    console.print(table)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line and exit code 2, like every other usage error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


RUN_SETTINGS = ("preset", "out", "resume", "json")
STUDY_TRAINING = {f.name for cls in (DataConfig, TrainConfig) for f in dataclasses.fields(cls)}


def technique_parser(composition: str) -> argparse.ArgumentParser:
    """The options of ``compress run A+B``, made from the techniques' config dataclasses."""
    names = parse_composition(composition)
    parser = OneLineParser(prog=f"compress run {composition}")
    seen: dict[str, str] = {}
    for name in names:
        technique = get_technique(name)
        for field in dataclasses.fields(technique.config_cls):
            if field.name in seen:
                raise UsageError(f"{seen[field.name]} and {name} both declare --{field.name}")
            seen[field.name] = name
        add_arguments(parser, technique.config_cls, f"{name}: {technique.summary}")
    add_arguments(parser, DataConfig, "data")
    add_arguments(parser, TrainConfig, "training")
    group = parser.add_argument_group("run")
    group.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="seed: the seed's CIFAR-10 protocol; paper: the paper's recipe",
    )
    group.add_argument("--out", default="runs", help="results root (default: runs)")
    group.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    group.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    return parser


def run_spec(composition: str, parsed: argparse.Namespace) -> RunSpec:
    """The run a command line asks for: defaults, then the preset, then explicit options."""
    names = parse_composition(composition)
    if parsed.resume:
        extra = [k for k, v in vars(parsed).items() if v is not None and k not in RUN_SETTINGS]
        if extra:
            raise UsageError(f"--resume continues a run with its own options; drop --{extra[0]}")
        spec = RunSpec.from_record(runs.read_json(Path(parsed.resume) / runs.CONFIG))
        if [use.name for use in spec.uses] != names:
            raise UsageError(f"{parsed.resume} is a {spec.name} run, not {'+'.join(names)}")
        return spec
    options = {k: v for k, v in vars(parsed).items() if k not in RUN_SETTINGS}
    return RunSpec.from_options(composition, explicit(options), parsed.preset)


def cmd_run(args: argparse.Namespace) -> int:
    parsed = technique_parser(args.technique).parse_args(args.rest)
    out_root = Path(parsed.out)
    run_console = Console(stderr=True) if parsed.json else console
    spec = run_spec(args.technique, parsed)
    try:
        if parsed.resume:
            outcome = runner.resume(Path(parsed.resume), run_console)
        else:
            outcome = runner.start(spec, out_root, run_console)
    except TrainingInterrupted as stop:
        error_console.print(
            f"compress run: {stop}; checkpoint kept. Continue with: "
            f"compress run {spec.name} --resume {stop.run_dir}",
            highlight=False,
            soft_wrap=True,
        )
        return 130
    except KeyboardInterrupt:
        error_console.print("compress run: interrupted while finishing the run", highlight=False)
        return 130
    except TrainingDiverged as error:
        error_console.print(
            f"compress run: error: training diverged: {error}; the run is marked failed",
            highlight=False,
            soft_wrap=True,
        )
        return 1
    metrics = {k: v for k, v in outcome.metrics.items() if k != "history"}
    if parsed.json:
        print(json.dumps({"run_dir": str(outcome.run_dir), **metrics}, indent=2))
        return 0
    columns = [(f"{metrics['label']}\n{outcome.run_dir.name}", metrics)]
    reference = runner.find_reference(spec, out_root)
    if reference is not None:
        columns.append(
            (
                f"reference: {reference.metrics['label']}\n{reference.run_dir.name}",
                reference.metrics,
            )
        )
    console.print(run_table(columns))
    console.print(f"run directory: {outcome.run_dir}", highlight=False)
    return 0


def comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def cmd_study_pareto(args: argparse.Namespace) -> None:
    from studies.study import StudySpec, optimize, report

    fixed = explicit({k: v for k, v in vars(args).items() if k in STUDY_TRAINING})
    spec = StudySpec(
        techniques=args.techniques,
        backbone=args.backbone,
        objectives=args.objectives,
        trials=args.trials,
        out=Path(args.out),
        study_name=args.study_name,
        storage=args.storage,
        sampler=args.sampler,
        seed=args.seed or 0,
        baselines=args.baselines,
        fixed=fixed,
    )
    get_entry(args.backbone)  # validate up front: unknown names fail before any training
    RunSpec.from_options("baseline", {"model": args.backbone, **fixed})
    study = optimize(spec, Console(stderr=True))
    for path in report(study, spec.directory, console):
        console.print(f"wrote {path}", highlight=False)


def cmd_study_show(args: argparse.Namespace) -> None:
    import optuna

    from studies.study import default_storage, report

    storage = args.storage or default_storage(Path(args.out), args.name)
    try:
        study = optuna.load_study(study_name=args.name, storage=storage)
    except KeyError:
        raise UsageError(f"no study {args.name!r} in {storage}") from None
    for path in report(study, Path(args.out) / args.name, console):
        console.print(f"wrote {path}", highlight=False)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="compress",
        description="Compare CNN compression techniques by accuracy per FLOP, param and ms.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    profile = commands.add_parser("profile", help="params, MACs, memory and latency of models")
    profile.add_argument("models", nargs="+", metavar="MODEL", help="e.g. ghostnet, timm:NAME")
    profile.add_argument("--width", type=float, help="width multiplier")
    profile.add_argument("--s", type=int, help="Ghost ratio s (>= 2)")
    profile.add_argument("--d", type=int, help="Ghost cheap depthwise kernel d (odd)")
    profile.add_argument("--input-size", type=positive_int, help="default: the model's own")
    profile.add_argument("--num-classes", type=positive_int, help="default: the model's own")
    profile.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    profile.add_argument("--repeats", type=int, default=30, help="latency runs; 0 skips timing")
    profile.add_argument("--json", action="store_true", help="print JSON instead of a table")
    profile.set_defaults(handler=cmd_profile)

    techniques = commands.add_parser("list", help="list the techniques and their options")
    techniques.set_defaults(handler=cmd_list)

    models = commands.add_parser("models", help="list the registered models")
    models.set_defaults(handler=cmd_models)

    run = commands.add_parser(
        "run",
        help="train with a technique and record the run",
        description="compress run TECHNIQUE [options]; `compress run TECHNIQUE --help` lists them",
    )
    run.add_argument("technique", help="a technique, or several joined by '+' (ghost+prune)")
    run.add_argument("rest", nargs=argparse.REMAINDER, help="the technique's options")
    run.set_defaults(handler=cmd_run)

    study = commands.add_parser("study", help="Optuna studies over techniques")
    studies = study.add_subparsers(dest="study_command", required=True)
    pareto = studies.add_parser("pareto", help="multi-objective study: accuracy vs cost")
    pareto.add_argument(
        "--techniques",
        type=comma_list,
        default=["ghost", "prune", "quantize"],
        help="candidates, comma-separated (default: ghost,prune,quantize)",
    )
    pareto.add_argument("--backbone", default="resnet20", help="model every technique starts from")
    pareto.add_argument(
        "--objectives",
        type=comma_list,
        default=["accuracy", "macs"],
        help="two or three of accuracy,macs,params,bops,latency",
    )
    pareto.add_argument("--trials", type=positive_int, default=10, help="trials to add")
    pareto.add_argument("--storage", help="Optuna storage URL (default: sqlite in --out)")
    pareto.add_argument("--study-name", default="pareto")
    pareto.add_argument("--sampler", default="tpe", choices=("tpe", "nsga2"))
    pareto.add_argument(
        "--baselines",
        type=comma_list,
        default=["ghostnet", "mobilenetv3_large", "mobilenetv3_small"],
        help="reference models trained on the same data and recipe",
    )
    pareto.add_argument("--out", default="runs/studies", help="results root")
    add_arguments(pareto, DataConfig, "data")
    add_arguments(pareto, TrainConfig, "training")
    pareto.set_defaults(handler=cmd_study_pareto)
    show = studies.add_parser("show", help="redraw a study's table, plot and export")
    show.add_argument("name", help="study name")
    show.add_argument("--storage", help="Optuna storage URL (default: sqlite in --out)")
    show.add_argument("--out", default="runs/studies", help="results root")
    show.set_defaults(handler=cmd_study_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int | None] = args.handler
    try:
        return handler(args) or 0
    except UsageError as error:
        error_console.print(
            f"compress {args.command}: error: {error}", highlight=False, soft_wrap=True
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
