"""Trials per hour of one study: one by one, K packed in one process, K processes.

The same queued trials (Ghost ``s``/``d`` points on one backbone, the options fixed, so
every arm trains the same networks) run three ways on the same machine in one run:
``--concurrent 1`` (the baseline), ``--concurrent K`` (K trials taking turns step by
step, a CUDA stream each) and ``--workers K`` (K processes, which on one GPU without MPS
take turns rather than overlap). Prints trials per hour per arm and each ratio to the
one-by-one rate.

    python bench/study_throughput.py --data-dir ../shared/data/cifar10 --trials 16 \\
        --backbone resnet20 --epochs 2 --concurrent 4
    python bench/study_throughput.py --backbone ghostnet --cifar-strides ...  # GhostNet
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from studies.study import StudySpec, open_study, optimize, optimize_parallel


def queued_params(trials: int, backbone: str) -> list[dict[str, Any]]:
    """``trials`` Ghost points, every searched option fixed."""
    points = itertools.cycle(itertools.product((2, 3, 4, 5), (1, 3, 5, 7)))
    width = {"ghost.width": 1.0} if backbone == "ghostnet" else {}
    return [
        {"technique": "ghost", "ghost.s": s, "ghost.d": d, **width}
        for s, d in itertools.islice(points, trials)
    ]


def timed_arm(out: Path, name: str, args: argparse.Namespace, **parallel: int) -> float:
    """Seconds for the queued trials with ``parallel`` (``concurrent`` or ``workers``)."""
    fixed: dict[str, Any] = {"epochs": args.epochs, "device": args.device}
    if args.data_dir:
        fixed.update(dataset="cifar10", data_dir=args.data_dir)
    else:
        fixed.update(dataset="synthetic")
    for key in ("train_size", "test_size", "batch_size"):
        if getattr(args, key):
            fixed[key] = getattr(args, key)
    if args.cifar_strides:
        fixed["cifar_strides"] = True
    spec = StudySpec(
        techniques=("ghost",),
        backbone=args.backbone,
        trials=args.trials,
        out=str(out),
        study_name=name,
        storage=f"journal:{out / name}.journal",
        baselines=(),
        fixed=fixed,
        **parallel,
    )
    queue = open_study(spec)
    for params in queued_params(args.trials, args.backbone):
        queue.enqueue_trial(params)
    start = time.perf_counter()
    study = (optimize_parallel if spec.workers > 1 else optimize)(spec, Console(quiet=True))
    seconds = time.perf_counter() - start
    states = {t.state.name for t in study.trials}
    if states != {"COMPLETE"}:
        raise SystemExit(f"{name}: trials ended {sorted(states)}, not all COMPLETE")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--concurrent", type=int, default=4, help="K")
    parser.add_argument("--backbone", default="resnet20")
    parser.add_argument("--cifar-strides", action="store_true", help="GhostNet's CIFAR variant")
    parser.add_argument("--data-dir", help="CIFAR-10 shards (default: synthetic data)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-size", type=int)
    parser.add_argument("--test-size", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--arms", default="one,packed,processes")
    args = parser.parse_args()
    k = args.concurrent
    arms = {
        "one": ("one by one", {}),
        "packed": (f"{k} packed in one process", {"concurrent": k}),
        "processes": (f"{k} processes", {"workers": k}),
    }
    wanted = args.arms.split(",")
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key in wanted:
            seconds[key] = timed_arm(Path(tmp), key, args, **arms[key][1])
            print(f"{key}_s {seconds[key]:.2f}", flush=True)
    cifar = " (cifar strides)" if args.cifar_strides else ""
    data = f"CIFAR-10 from {args.data_dir}" if args.data_dir else "synthetic data"
    table = Table(
        title=f"{args.trials} Ghost trials of {args.backbone}{cifar}, {args.epochs} epochs, {data}"
    )
    for column in ("arm", "wall", "trials per hour", "vs one by one"):
        table.add_column(column)
    base = seconds.get("one")
    for key in wanted:
        rate = args.trials * 3600 / seconds[key]
        ratio = f"{base / seconds[key]:.2f}x" if base else ""
        table.add_row(arms[key][0], f"{seconds[key]:.1f} s", f"{rate:.0f}", ratio)
        if base:
            print(f"ratio_{key} {base / seconds[key]:.3f}")
    Console().print(table)


if __name__ == "__main__":
    main()
