"""Study cost outside training, and the speed-up of 2 workers over 1, same machine, same run.

Per trial: wall time from Optuna's start to completion minus the time the run records
for training and for the technique's own post-training work (pruning and fine-tuning);
what is left is sampling, model building, measurement, records and plots (target < 2 s).
Then the same trials (the same options, queued) again with ``--workers 2`` (journal
storage) against the one process, wall clock for each.

    python bench/study_overhead.py --trials 6
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from studies.study import StudySpec, open_study, optimize, optimize_parallel


def study_spec(out: Path, name: str, trials: int, workers: int, args: argparse.Namespace):
    return StudySpec(
        techniques=["ghost", "prune"],
        backbone=args.backbone,
        objectives=["accuracy", "macs"],
        trials=trials,
        out=str(out),
        study_name=name,
        baselines=(),
        workers=workers,
        fixed={"dataset": args.dataset, "epochs": args.epochs},
    )


def overheads(study) -> list[float]:
    """Seconds of each complete trial spent outside training and the technique's own work."""
    spent = []
    for trial in study.trials:
        if "metrics" not in trial.user_attrs:
            continue
        run_dir = Path(trial.user_attrs["metrics"]["run_dir"])
        metrics = json.loads((run_dir / "metrics.json").read_text())
        wall = (trial.datetime_complete - trial.datetime_start).total_seconds()
        spent.append(wall - metrics["train_time_s"] - metrics["post_time_s"])
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--backbone", default="resnet20")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    quiet = Console(quiet=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        start = time.perf_counter()
        one = optimize(study_spec(out, "one", args.trials, 1, args), quiet)
        one_wall = time.perf_counter() - start
        two = study_spec(out, "two", args.trials, 2, args)
        queue = open_study(two)
        for trial in one.trials:  # the same work for both, whatever the samplers would pick
            queue.enqueue_trial(trial.params)
        start = time.perf_counter()
        optimize_parallel(two, quiet)
        two_wall = time.perf_counter() - start
        spent = overheads(one)
    table = Table(title=f"{args.trials} trials of ghost/prune on {args.backbone}, {args.dataset}")
    for column in ("measure", "value"):
        table.add_column(column)
    median = statistics.median(spent)
    table.add_row("overhead per trial, median (max)", f"{median:.2f} s ({max(spent):.2f} s)")
    table.add_row("1 worker, wall", f"{one_wall:.1f} s")
    table.add_row("2 workers, wall", f"{two_wall:.1f} s")
    table.add_row("speed-up", f"{one_wall / two_wall:.2f}x")
    Console().print(table)
    print(f"overhead_s {median:.3f}")
    print(f"speedup {one_wall / two_wall:.3f}")


if __name__ == "__main__":
    main()
