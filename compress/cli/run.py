"""``compress run TECHNIQUE``: train with a technique (or several joined by '+') and record it."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from compress import distributed, runner, runs
from compress.cli.common import OneLineParser, add_options, add_recipe, command, given, options_of
from compress.data import DataConfig
from compress.engine import TrainConfig, TrainingInterrupted
from compress.errors import UsageError, first_line
from compress.options import Options, add_arguments, option
from compress.reports import console, error_console, run_table, stderr_console
from compress.spec import PRESETS, RunSpec
from compress.techniques import get_technique, parse_composition

EXAMPLES = (
    "compress run ghost --s 2 --d 3                      # GhostNet on the bundled digits",
    "compress run prune --model vgg16 --target-macs 0.5  # channels removed",
    "compress run ghost+prune --backbone resnet20 --preset seed",
    "compress run baseline --resume <RUN_DIR>           # continue an interrupted run",
)


@dataclass
class RunSettings(Options):
    """Where a run goes and how it is shown; none of it changes what is trained."""

    preset: str | None = option(
        None,
        "a protocol by name (seed: the seed's CIFAR-10 runs; paper: the paper's recipe); "
        "explicit options win",
        choices=tuple(PRESETS),
    )
    out: str = option("runs", "results root: the run directory is made in it")
    cache: str | None = option(
        None, "networks trained once and reused, e.g. a teacher (default: OUT/cache)"
    )
    config: str | None = option(
        None,
        "a run's options as a file (JSON or YAML, the keys of a run's config.json: "
        "techniques, data, train); flags given here override it",
    )
    resume: str | None = option(None, "continue the interrupted run in this directory")
    json: bool = option(False, "print the final metrics as JSON")


def technique_parser(composition: str) -> argparse.ArgumentParser:
    """The options of ``compress run A+B``, made from the techniques' config dataclasses."""
    parser = OneLineParser(prog=f"compress run {composition}")
    seen: dict[str, str] = {}
    for name in parse_composition(composition):
        technique = get_technique(name)
        for field in dataclasses.fields(technique.config_cls):
            if field.name in seen:
                raise UsageError(f"{seen[field.name]} and {name} both declare --{field.name}")
            seen[field.name] = name
        add_arguments(parser, technique.config_cls, f"{name}: {technique.summary}")
    add_recipe(parser)
    add_options(parser, RunSettings, "run")
    return parser


def run_spec(composition: str, parsed: argparse.Namespace, settings: RunSettings) -> RunSpec:
    """The run a command line asks for: defaults, then the preset, then explicit options."""
    names = parse_composition(composition)
    configs = [get_technique(name).config_cls for name in names]
    chosen = given(parsed, *configs, DataConfig, TrainConfig)
    if settings.resume:
        if chosen or settings.preset:
            extra = next(iter(chosen), "preset")
            raise UsageError(f"--resume continues a run with its own options; drop --{extra}")
        spec = RunSpec.from_record(runs.read_json(Path(settings.resume) / runs.CONFIG))
        if [use.name for use in spec.uses] != names:
            raise UsageError(f"{settings.resume} is a {spec.name} run, not {'+'.join(names)}")
        return spec
    base = options_from_file(Path(settings.config), names) if settings.config else {}
    return RunSpec.from_options(composition, {**base, **chosen}, settings.preset)


def options_from_file(path: Path, names: list[str]) -> dict[str, Any]:
    """The flat options a run file gives (a run's config.json replays that run): each
    technique's options, then the data's and the training's. Its techniques must be the
    command's, so that the file and the command line say the same run."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"--config {path}: cannot read it ({first_line(error)})") from None
    try:
        record = yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError as error:
        raise UsageError(f"--config {path} is not JSON or YAML: {first_line(error)}") from None
    if not isinstance(record, dict):
        raise UsageError(f"--config {path} must hold a mapping (techniques, data, train)")
    techniques = record.get("techniques", [])
    if not isinstance(techniques, list) or not all(
        isinstance(t, dict) and isinstance(t.get("options", {}), dict) for t in techniques
    ):
        raise UsageError(f"--config {path}: techniques must be a list of {{name, options}}")
    given = [t.get("name") for t in techniques]
    if techniques and given != names:
        raise UsageError(
            f"--config {path} describes {'+'.join(map(str, given))}, not {'+'.join(names)}"
        )
    options: dict[str, Any] = {}
    for part in (*(t.get("options", {}) for t in techniques), record.get("data", {}),
                 record.get("train", {})):  # fmt: skip
        if not isinstance(part, dict):
            raise UsageError(f"--config {path}: data and train must be mappings")
        options.update(part)
    return options


def execute(args: argparse.Namespace) -> int:
    parsed = technique_parser(args.technique).parse_args(args.rest)
    settings = options_of(RunSettings, parsed)
    out_root = Path(settings.out)
    if not distributed.is_main():  # torchrun's other processes: rank 0 speaks for the run
        run_console = stderr_console(quiet=True)
    else:
        run_console = stderr_console() if settings.json else console
    spec = run_spec(args.technique, parsed, settings)
    try:
        if settings.resume:
            outcome = runner.resume(Path(settings.resume), run_console)
        else:
            cache = Path(settings.cache) if settings.cache else None
            outcome = runner.start(spec, out_root, run_console, cache)
    except TrainingInterrupted as stop:
        error_console.print(
            f"compress run: {stop}; checkpoint kept. Continue with: "
            f"compress run {spec.name} --resume {stop.run_dir}",
            highlight=False,
            soft_wrap=True,
        )
        return 130
    except runner.RunComplete as done:
        console.print(str(done), highlight=False)
        return 0
    if not distributed.is_main():
        return 0
    metrics = {k: v for k, v in outcome.metrics.items() if k != "history"}
    if settings.json:
        print(runs.dumps({"run_dir": str(outcome.run_dir), **metrics}))
        return 0
    columns = [(f"{metrics['label']}\n{outcome.run_dir.name}", metrics)]
    reference = runner.find_reference(spec, out_root)
    if reference is not None:
        mine, theirs = runner.latency_side_by_side([outcome, reference])
        columns = [
            (columns[0][0], mine),
            (f"reference: {theirs['label']}\n{reference.run_dir.name}", theirs),
        ]
    console.print(run_table(columns))
    console.print(f"run directory: {outcome.run_dir}", highlight=False)
    return 0


def add_to(commands: argparse._SubParsersAction) -> None:
    parser = command(
        commands,
        "run",
        "train with a technique and record the run; `compress run TECHNIQUE --help` lists "
        "its options",
        EXAMPLES,
        execute,
    )
    parser.add_argument("technique", help="a technique, or several joined by '+' (ghost+prune)")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="the technique's options")
