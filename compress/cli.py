"""The ``compress`` command line: one sub-command per job, errors as one line, exit code 2."""

from __future__ import annotations

import argparse
import dataclasses
import math
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import torch

from compress import runner, runs
from compress.data import DataConfig, load_data, load_image, prepare
from compress.engine import TrainConfig, TrainingInterrupted, resolve_device
from compress.errors import UsageError
from compress.loading import load_run
from compress.measure import ESTIMATED, MEASURED, profile_model
from compress.options import add_arguments, explicit, flag
from compress.registry import create_model, get_entry, list_models, pretrained_model
from compress.reports import console, error_console, profile_table, run_table, stderr_console
from compress.runner import PRESETS, RunSpec, dry_run
from compress.techniques import get_technique, list_techniques, parse_composition


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
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
        dry_run(model, size, name)
        profiles.append(profile_model(model, size, device, args.repeats))
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
        print(runs.dumps(records))
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


RUN_SETTINGS = ("preset", "out", "cache", "resume", "json")
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
    group.add_argument(
        "--cache",
        help="networks trained once and reused, e.g. a teacher (default: OUT/cache)",
    )
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
    run_console = stderr_console() if parsed.json else console
    spec = run_spec(args.technique, parsed)
    try:
        if parsed.resume:
            outcome = runner.resume(Path(parsed.resume), run_console)
        else:
            cache = Path(parsed.cache) if parsed.cache else None
            outcome = runner.start(spec, out_root, run_console, cache)
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
    except runner.RunComplete as done:
        console.print(str(done), highlight=False, markup=False)
        return 0
    metrics = {k: v for k, v in outcome.metrics.items() if k != "history"}
    if parsed.json:
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


def comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def comma_ints(text: str) -> list[int]:
    try:
        return [int(part) for part in comma_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 2,3,4, got {text!r}") from None


def training_options(
    args: argparse.Namespace, backbone: str, preset: str | None = None
) -> dict[str, object]:
    """The data and training options given on the command line, checked before any work."""
    fixed = explicit({k: v for k, v in vars(args).items() if k in STUDY_TRAINING})
    get_entry(backbone)  # unknown names fail before any training
    RunSpec.from_options("baseline", {"model": backbone, **fixed}, preset)
    return fixed


def cmd_study_pareto(args: argparse.Namespace) -> None:
    from studies.study import StudySpec, optimize, optimize_parallel, report

    fixed = training_options(args, args.backbone)
    spec = StudySpec(
        techniques=args.techniques,
        backbone=args.backbone,
        objectives=args.objectives,
        trials=args.trials,
        out=Path(args.out),
        study_name=args.study_name,
        storage=args.storage,
        sampler=args.sampler,
        sampler_seed=args.sampler_seed,
        baselines=args.baselines,
        fixed=fixed,
        workers=args.workers,
    )
    run_study = optimize_parallel if spec.workers > 1 else optimize
    study = run_study(spec, stderr_console())
    for path in report(study, spec.directory, console):
        console.print(f"wrote {path}", highlight=False)


def cmd_study_show(args: argparse.Namespace) -> None:
    import optuna

    from studies.storage import default_storage, masked, open_storage
    from studies.study import NAME, report

    out = Path(args.out)
    if not NAME.fullmatch(args.name):
        raise UsageError(f"{args.name!r} is not a study name (letters, digits, '.', '_', '-')")
    if args.storage is None and not any(
        (out / f"{args.name}{suffix}").exists() for suffix in (".db", ".journal")
    ):
        raise UsageError(f"no study {args.name!r} in {out} (pass --out or --storage)")
    storage = args.storage or default_storage(out, args.name)
    try:
        study = optuna.load_study(
            study_name=args.name, storage=open_storage(storage, must_exist=True)
        )
    except KeyError:
        raise UsageError(f"no study {args.name!r} in {masked(storage)}") from None
    for path in report(study, out / args.name, console):
        console.print(f"wrote {path}", highlight=False)


def cmd_study_ablation(args: argparse.Namespace) -> None:
    from studies.ablation import (
        GHOST_BACKBONES,
        ablation,
        ablation_table,
        check_grid,
        write_results,
    )

    check_grid(args.backbone, args.s, args.d)
    fixed = training_options(args, GHOST_BACKBONES[args.backbone], args.preset)
    out = Path(args.out) / f"ablation-{args.backbone}"
    rows = ablation(args.backbone, args.s, args.d, fixed, out, stderr_console(), args.preset)
    console.print(ablation_table(args.backbone, rows))
    for path in write_results(rows, out):
        console.print(f"wrote {path}", highlight=False)


def load_subject(model: str, image: str | None) -> tuple[torch.nn.Module, torch.Tensor, str]:
    """The network ``ghost maps`` and ``ghost fit`` look into, and its normalised image."""
    path = Path(model)
    if path.is_dir():
        loaded = load_run(path)
        shape = loaded.input
        if shape["mean"] is None:  # a run recorded before its input was
            data = load_data(loaded.spec.data)
            shape = {**shape, "mean": data.mean, "std": data.std, "image_size": data.image_size}
        mean = torch.tensor(shape["mean"]).view(1, 3, 1, 1)
        std = torch.tensor(shape["std"]).view(1, 3, 1, 1)
        pixels = load_image(image, shape["image_size"])
        return loaded.model, prepare(pixels, mean, std, shape["input_size"]), path.name
    network = pretrained_model(model)
    config = network.pretrained_cfg
    mean = torch.tensor(config["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(config["std"]).view(1, 3, 1, 1)
    size = config["input_size"][-1]
    return network, prepare(load_image(image, size), mean, std, size), model


def subject_maps(args: argparse.Namespace) -> tuple[torch.Tensor, str, str]:
    """(C, H, W) maps of the chosen layer, the layer's name and the model's label."""
    from ghost.redundancy import default_layer, feature_maps

    model, image, label = load_subject(args.model, args.image)
    layer = args.layer or default_layer(model, image)
    return feature_maps(model, layer, image), layer, label


def cmd_ghost_maps(args: argparse.Namespace) -> None:
    from rich.table import Table

    from compress.plots import plot_feature_maps
    from ghost.redundancy import most_similar_pairs, redundancy

    maps, layer, label = subject_maps(args)
    found = redundancy(maps, args.threshold)
    shown = maps[: args.max_maps]
    pairs = most_similar_pairs(shown, args.pairs)
    summary = Table(title=f"Feature-map redundancy of {label}, layer {layer}")
    summary.add_column("")
    summary.add_column("value", justify="right")
    summary.add_row("maps (dead: all zero)", f"{found.channels} ({found.dead})")
    summary.add_row("map size", f"{maps.shape[1]} x {maps.shape[2]}")
    summary.add_row(
        f"pairs with cosine > {args.threshold}", f"{100 * found.share_pairs_above:.2f}%"
    )
    summary.add_row("maps with such a ghost", f"{100 * found.share_maps_with_ghost:.2f}%")
    for i, j, similarity in pairs:
        summary.add_row(f"boxed pair: maps {i} and {j}", f"cosine {similarity:.3f}")
    console.print(summary)
    histogram = Table(title="Cosine similarity of every pair of live maps")
    for column in ("from", "to", "pairs"):
        histogram.add_column(column, justify="right")
    for low, high, count in found.histogram():
        histogram.add_row(f"{low:+.1f}", f"{high:+.1f}", f"{count:,}")
    console.print(histogram)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"maps-{Path(label).name}-{layer.replace('.', '_')}.png"
    title = f"{label} {layer}: first {len(shown)} of {found.channels} maps, similar pairs boxed"
    plot_feature_maps(shown, pairs, found.pair_similarities, path, title)
    console.print(f"wrote {path}", highlight=False)


def cmd_ghost_fit(args: argparse.Namespace) -> None:
    from rich.table import Table

    from ghost.module import check_ghost_options
    from ghost.redundancy import fit_cheap_operation, most_similar_pairs

    if not args.d:
        raise UsageError("--d names no kernel (e.g. 1,3,5,7)")
    try:
        for d in args.d:
            check_ghost_options(2, d)
    except ValueError as error:
        raise UsageError(str(error)) from None
    maps, layer, label = subject_maps(args)
    pairs = most_similar_pairs(maps, args.pairs)
    table = Table(
        title=f"MSE of the best d x d depthwise filter from map i to map j "
        f"({label}, {layer}; maps scaled to unit std)"
    )
    for column in ("i", "j", "cosine", *(f"d = {d}" for d in args.d)):
        table.add_column(column, justify="right")
    errors = {d: [] for d in args.d}
    for i, j, similarity in pairs:
        for d in args.d:
            errors[d].append(fit_cheap_operation(maps[i], maps[j], d).mse)
        table.add_row(
            str(i), str(j), f"{similarity:.3f}", *(f"{errors[d][-1]:.3e}" for d in args.d)
        )
    table.add_row("mean", "", "", *(f"{sum(e) / len(e):.3e}" for e in errors.values()))
    console.print(table)


def cmd_ghost_theory(args: argparse.Namespace) -> None:
    from rich.table import Table

    from ghost.theory import approximate_ratio, conv_vs_ghost

    try:
        ratio = conv_vs_ghost(args.c, args.n, args.k, args.s, args.d, (args.h, args.w))
    except ValueError as error:
        raise UsageError(str(error)) from None
    table = Table(
        title=f"Conv {args.c}->{args.n}, {args.k}x{args.k} on {args.h}x{args.w} "
        f"vs Ghost module s={args.s}, d={args.d}"
    )
    for column in ("", "Eq. 4 / 5", "measured"):
        table.add_column(column, justify="right")
    table.add_row("r_s: conv MACs / Ghost MACs", f"{ratio.theory:.4f}", f"{ratio.mac_ratio:.4f}")
    table.add_row(
        "r_c: conv weights / Ghost weights", f"{ratio.theory:.4f}", f"{ratio.param_ratio:.4f}"
    )
    table.add_row("s c / (s + c - 1) (d ~ k)", f"{approximate_ratio(args.c, args.s):.4f}", "")
    console.print(table)


def read_runs(directories: Sequence[str]) -> list[dict]:
    """metrics.json of each run directory; a run without epochs has nothing to compare."""
    runs_read = []
    for directory in directories:
        metrics = runs.read_metrics(Path(directory))
        if not metrics["history"]:
            raise UsageError(f"{directory} has no completed epoch to compare")
        runs_read.append({**metrics, "latency_source": "recorded by the run"})
    return runs_read


def cmd_compare(args: argparse.Namespace) -> None:
    from compress.plots import plot_compare
    from compress.reports import compare_table

    compared = read_runs(args.runs)
    png = Path(args.png)
    runs.check_root(png.parent)
    names = [Path(directory).name for directory in args.runs]
    console.print(compare_table(names, compared))
    png.parent.mkdir(parents=True, exist_ok=True)
    plot_compare([(m["label"], m["history"]) for m in compared], png)
    console.print(f"wrote {png}", highlight=False)


def cmd_reproduce_seed(args: argparse.Namespace) -> None:
    from compress.reproduce import SEED_MODELS, read_published, reproduce_seed

    published = read_published(args.published)
    options = training_options(args, SEED_MODELS[0], "seed")  # checked before the first epoch
    report = reproduce_seed(Path(args.out), options, stderr_console(), published)
    console.print(f"wrote {report} and {report.parent / 'curves.png'}", highlight=False)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="compress",
        description="Compare CNN compression techniques by accuracy per FLOP, param and ms.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    profile = commands.add_parser("profile", help="params, MACs, memory and latency of models")
    profile.add_argument("models", nargs="+", metavar="MODEL", help="e.g. ghostnet, timm:NAME")
    profile.add_argument("--width", type=positive_float, help="width multiplier")
    profile.add_argument("--s", type=int, help="Ghost ratio s (>= 2)")
    profile.add_argument("--d", type=int, help="Ghost cheap depthwise kernel d (odd)")
    profile.add_argument("--input-size", type=positive_int, help="default: the model's own")
    profile.add_argument("--num-classes", type=positive_int, help="default: the model's own")
    profile.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    profile.add_argument(
        "--repeats", type=count, default=30, help="latency runs; 0 skips timing (default: 30)"
    )
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

    compare = commands.add_parser("compare", help="runs side by side: costs and curves")
    compare.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories")
    compare.add_argument("--png", default="runs/compare.png", help="the overlaid curves")
    compare.set_defaults(handler=cmd_compare)

    reproduce = commands.add_parser("reproduce", help="reproduce a published experiment")
    experiments = reproduce.add_subparsers(dest="experiment", required=True)
    seed = experiments.add_parser(
        "seed", help="GhostNet vs MobileNetV3-Large with the seed protocol, as report.md"
    )
    seed.add_argument("--published", help="the seed's numbers as JSON {model: {row: value}}")
    seed.add_argument("--out", default="runs/reproduce-seed", help="report directory")
    add_arguments(seed, DataConfig, "data (default: the seed's CIFAR-10)")
    add_arguments(seed, TrainConfig, "training (default: the seed's protocol)")
    seed.set_defaults(handler=cmd_reproduce_seed)

    ghost = commands.add_parser("ghost", help="the paper's evidence: redundant maps, cheap fits")
    ghosts = ghost.add_subparsers(dest="ghost_command", required=True)
    maps = ghosts.add_parser("maps", help="one layer's feature maps, similar pairs boxed")
    fit = ghosts.add_parser("fit", help="fit d x d depthwise filters between similar maps")
    for sub in (maps, fit):
        sub.add_argument(
            "--model",
            default="resnet50",
            help="a run directory of `compress run`, or a timm model with pretrained weights "
            "(default: resnet50, the paper's Figure 1; needs the internet)",
        )
        sub.add_argument("--layer", help="module name (default: layer1, else the widest map)")
        sub.add_argument("--image", help="an image file (default: scikit-learn's china.jpg)")
    maps.add_argument("--threshold", type=float, default=0.9, help="cosine counted as a ghost")
    maps.add_argument("--pairs", type=positive_int, default=6, help="pairs to box")
    maps.add_argument("--max-maps", type=positive_int, default=64, help="maps drawn")
    maps.add_argument("--out", default="runs/ghost", help="where the PNG goes")
    maps.set_defaults(handler=cmd_ghost_maps)
    fit.add_argument("--pairs", type=positive_int, default=5, help="most similar pairs fitted")
    fit.add_argument("--d", type=comma_ints, default=[1, 3, 5, 7], help="kernels (1,3,5,7)")
    fit.set_defaults(handler=cmd_ghost_fit)
    theory = ghosts.add_parser("theory", help="Eq. 4/5 ratios beside a measured Ghost module")
    for name, default, text in (
        ("c", 64, "input channels"),
        ("n", 128, "output channels"),
        ("k", 3, "conv kernel"),
        ("s", 2, "ratio s"),
        ("d", 3, "cheap kernel d"),
        ("h", 32, "input height"),
        ("w", 32, "input width"),
    ):
        theory.add_argument(f"--{name}", type=positive_int, default=default, help=text)
    theory.set_defaults(handler=cmd_ghost_theory)

    study = commands.add_parser("study", help="Optuna studies over techniques")
    studies = study.add_subparsers(dest="study_command", required=True)
    pareto = studies.add_parser("pareto", help="multi-objective study: accuracy vs cost")
    pareto.add_argument(
        "--techniques",
        type=comma_list,
        default=["ghost", "prune", "quantize", "distill"],
        help="candidates, comma-separated (default: ghost,prune,quantize,distill)",
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
        "--sampler-seed",
        type=int,
        help="seed of the sampler, for a reproducible study (default: fresh in each process)",
    )
    pareto.add_argument(
        "--baselines",
        type=comma_list,
        default=["ghostnet", "mobilenetv3_large", "mobilenetv3_small"],
        help="reference models trained on the same data and recipe",
    )
    pareto.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="worker processes sharing the study (journal file storage; a GPU each if several)",
    )
    pareto.add_argument("--out", default="runs/studies", help="results root")
    add_arguments(pareto, DataConfig, "data")
    add_arguments(pareto, TrainConfig, "training")
    pareto.set_defaults(handler=cmd_study_pareto)
    grid = studies.add_parser(
        "ablation", help="the paper's s and d ablation: exact params/MACs, measured top-1"
    )
    grid.add_argument("--backbone", default="vgg16", choices=("vgg16", "resnet56"))
    grid.add_argument("--s", type=comma_ints, default=[2, 3, 4, 5], help="ratios s (2,3,4,5)")
    grid.add_argument("--d", type=comma_ints, default=[1, 3, 5, 7], help="kernels d (1,3,5,7)")
    grid.add_argument(
        "--preset", choices=sorted(PRESETS), help="paper: the paper's CIFAR-10 recipe (164 epochs)"
    )
    grid.add_argument("--out", default="runs/studies", help="results root")
    add_arguments(grid, DataConfig, "data")
    add_arguments(grid, TrainConfig, "training")
    grid.set_defaults(handler=cmd_study_ablation)
    show = studies.add_parser("show", help="redraw a study's table, plot and export")
    show.add_argument("name", help="study name")
    show.add_argument("--storage", help="Optuna storage URL (default: sqlite in --out)")
    show.add_argument("--out", default="runs/studies", help="results root")
    show.set_defaults(handler=cmd_study_show)
    return parser


def _terminate(_signal: int, _frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM ends a command as Ctrl-C does: checkpoint, status, 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int | None] = args.handler
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return handler(args) or 0
    except UsageError as error:
        error_console.print(
            f"compress {args.command}: error: {error}", highlight=False, soft_wrap=True
        )
        return 2
    except KeyboardInterrupt:  # `run` says more; studies keep every finished trial
        error_console.print(f"compress {args.command}: interrupted", highlight=False)
        return 130


if __name__ == "__main__":
    sys.exit(main())
