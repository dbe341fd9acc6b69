"""``compress study pareto|show|ablation``: Optuna studies over techniques."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from compress.cli.common import add_options, add_recipe, command, given, options_of
from compress.data import DataConfig
from compress.engine import TrainConfig
from compress.errors import UsageError
from compress.options import Options, option
from compress.reports import console, stderr_console
from compress.runs import log_warnings
from compress.spec import RunSpec

PARETO_EXAMPLES = (
    "compress study pareto --techniques ghost,prune,quantize --backbone resnet20 --trials 20",
    "compress study pareto --workers 2 --study-name wide --trials 40",
    "compress study pareto --storage postgresql://user@dbhost/studies --study-name cifar",
)
SHOW_EXAMPLES = ("compress study show pareto",)
ABLATION_EXAMPLES = (
    "compress study ablation --backbone vgg16 --s 2,3,4,5 --d 1,3,5,7 --preset paper",
)


@dataclass
class ShowOptions(Options):
    name: str = option("pareto", "the study's name", positional=True)
    storage: str | None = option(None, "Optuna storage URL (default: the study's file in OUT)")
    out: str = option("runs/studies", "results root")


def pareto(args: argparse.Namespace) -> None:
    from studies.study import StudySpec, optimize, optimize_parallel, report

    spec: StudySpec = options_of(StudySpec, args, fixed=given(args, DataConfig, TrainConfig))
    run_study = optimize_parallel if spec.workers > 1 else optimize
    with log_warnings(spec.directory / "warnings.log"):
        study = run_study(spec, stderr_console())
    for path in report(study, spec.directory, console):
        console.print(f"wrote {path}", highlight=False)


def show(args: argparse.Namespace) -> None:
    import optuna

    from studies.storage import default_storage, masked, open_storage
    from studies.study import NAME, report

    options: ShowOptions = options_of(ShowOptions, args)
    root = Path(options.out)
    if not NAME.fullmatch(options.name):
        raise UsageError(f"{options.name!r} is not a study name (letters, digits, '.', '_', '-')")
    if options.storage is None and not any(
        (root / f"{options.name}{suffix}").exists() for suffix in (".db", ".journal")
    ):
        raise UsageError(f"no study {options.name!r} in {root} (pass --out or --storage)")
    storage = options.storage or default_storage(root, options.name)
    try:
        study = optuna.load_study(
            study_name=options.name, storage=open_storage(storage, must_exist=True)
        )
    except KeyError:
        raise UsageError(f"no study {options.name!r} in {masked(storage)}") from None
    for path in report(study, root / options.name, console):
        console.print(f"wrote {path}", highlight=False)


def ablation(args: argparse.Namespace) -> None:
    from studies.ablation import AblationOptions, ablation_table, ghost_versions, write_results
    from studies.ablation import ablation as run_ablation

    options: AblationOptions = options_of(AblationOptions, args)
    fixed = given(args, DataConfig, TrainConfig)
    model = ghost_versions()[options.backbone]
    RunSpec.from_options("ghost", {"model": model, **fixed}, options.preset)  # checked first
    rows = run_ablation(options, fixed, stderr_console())
    console.print(ablation_table(options.backbone, rows))
    for path in write_results(rows, options.directory):
        console.print(f"wrote {path}", highlight=False)


def add_to(commands: argparse._SubParsersAction) -> None:
    from studies.ablation import AblationOptions
    from studies.study import StudySpec

    parser = command(
        commands,
        "study",
        "Optuna studies over techniques",
        (*PARETO_EXAMPLES, *SHOW_EXAMPLES, *ABLATION_EXAMPLES),
    )
    studies = parser.add_subparsers(dest="study_command", required=True)
    chosen = command(
        studies, "pareto", "multi-objective study: accuracy vs cost", PARETO_EXAMPLES, pareto
    )
    add_options(chosen, StudySpec, "study")
    add_recipe(chosen)
    shown = command(studies, "show", "redraw a study's table, plot and export", SHOW_EXAMPLES, show)
    add_options(shown, ShowOptions, "show")
    grid = command(
        studies,
        "ablation",
        "the paper's s and d ablation: exact params/MACs, measured top-1",
        ABLATION_EXAMPLES,
        ablation,
    )
    add_options(grid, AblationOptions, "ablation")
    add_recipe(grid)
