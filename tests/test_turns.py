"""Runs packed in one process (``compress.turns``): alone or packed, the same numbers; one
that fails fails alone; Ctrl-C stops them all, checkpointed; a packed study records the
trials a one-by-one study records."""

import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import optuna
import pytest
from clitools import compress_cli, quick_study
from rich.console import Console
from test_study import quick_spec

from compress import runs
from compress.engine import TrainingInterrupted
from compress.plots import plot_curves
from compress.runner import RunFailed, run
from compress.turns import Turns
from studies.storage import open_storage
from studies.study import optimize

TINY = {
    "dataset": "synthetic",
    "train_size": 128,
    "test_size": 32,
    "epochs": 2,
    "batch_size": 32,
    "input_size": 16,
    "precise_bn": 64,
}
RUNS = [
    ("baseline", {"model": "resnet20", "seed": 1}),
    ("ghost", {"backbone": "resnet20", "s": 3, "seed": 2}),
    ("baseline", {"model": "resnet20", "optimizer": "sgd", "lr": 1e30, "seed": 3}),  # NaN
]
TIMING = ("time_s", "images_per_s")


def outcome(technique, options, out):
    """A run's history (timings left out: they are the only numbers packing may change)
    and final metrics, or why it failed."""
    try:
        metrics = run(technique, out, console=Console(quiet=True), **{**TINY, **options}).metrics
    except RunFailed as error:
        return error.reason
    history = [{k: v for k, v in epoch.items() if k not in TIMING} for epoch in metrics["history"]]
    return history, metrics["final_val_acc"], metrics["macs"]


def packed(turns, jobs, out, device="cpu"):
    """``jobs`` run at once in threads taking turns; their outcomes (or exceptions)."""
    results = [None] * len(jobs)

    def one(index):
        try:
            with turns.seat(device):
                results[index] = outcome(*jobs[index], out)
        except BaseException as error:  # what ended the run is what the test checks
            results[index] = error

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    return threads, results


def test_packed_runs_give_the_numbers_they_give_alone_and_a_failure_stays_alone(tmp_path):
    alone = [outcome(technique, options, tmp_path / "alone") for technique, options in RUNS]
    threads, together = packed(Turns(), RUNS, tmp_path / "packed")
    for thread in threads:
        thread.join()
    assert together == alone
    assert together[2].startswith("TrainingDiverged: the training loss became nan")
    assert [len(result[0]) for result in together[:2]] == [2, 2]


def test_stopping_the_rotation_interrupts_every_run_at_a_checkpoint(tmp_path):
    turns = Turns()
    jobs = [
        ("baseline", {"model": "resnet20", "epochs": 50}),
        ("ghost", {"backbone": "resnet20", "epochs": 50}),
    ]
    threads, results = packed(turns, jobs, tmp_path)
    deadline = time.monotonic() + 120
    while not list(tmp_path.rglob(runs.CHECKPOINT)) and time.monotonic() < deadline:
        time.sleep(0.05)
    turns.stop()
    for thread in threads:
        thread.join(timeout=60)
    assert all(isinstance(result, TrainingInterrupted) for result in results), results
    statuses = [runs.read_json(r.run_dir / runs.METRICS)["status"] for r in results]
    assert statuses == ["interrupted", "interrupted"]


def enqueued_study(out, concurrent):
    """Three queued trials: two prunings of one shared backbone, one that fails."""
    spec = quick_spec(
        out, techniques=["prune", "explode_for_test"], trials=3, concurrent=concurrent
    )
    spec.root.mkdir(parents=True)
    storage = open_storage(spec.storage_url)
    study = optuna.create_study(
        study_name=spec.study_name, storage=storage, directions=spec.directions
    )
    for params in (
        {"technique": "prune", "prune.ratio": 0.3},
        {"technique": "explode_for_test", "explode_for_test.when": 0.5},
        {"technique": "prune", "prune.ratio": 0.6},
    ):
        study.enqueue_trial(params)
    return spec


def by_params(study):
    return sorted((str(sorted(t.params.items())), t.state.name, t.values) for t in study.trials)


def test_a_packed_study_records_what_a_one_by_one_study_records(tmp_path):
    one_by_one = optimize(enqueued_study(tmp_path / "a", 1), Console(quiet=True))
    together = optimize(enqueued_study(tmp_path / "b", 3), Console(quiet=True))
    assert by_params(together) == by_params(one_by_one)
    states = sorted(t.state.name for t in together.trials)
    assert states == ["COMPLETE", "COMPLETE", "FAIL"]
    backbones = list((tmp_path / "b" / "cache").glob("resnet20-*/metrics.json"))
    assert len(backbones) == 1  # trained once, while the other trials waited their turn


@pytest.fixture
def ctrl_c_raises(signal_handlers_restored):
    """SIGINT raises KeyboardInterrupt in this process, as in a terminal."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def test_ctrl_c_stops_a_packed_study_and_every_trial_it_trains(tmp_path, ctrl_c_raises):
    """One trial trains the shared backbone, the other waits for it: both end, and no
    new trial starts."""
    spec = quick_spec(tmp_path, trials=2, concurrent=2, fixed={**TINY, "epochs": 50})

    def press_ctrl_c_once_training_has_a_checkpoint():
        while not list(tmp_path.rglob(runs.CHECKPOINT)):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=press_ctrl_c_once_training_has_a_checkpoint, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        optimize(spec, Console(quiet=True))
    study = optuna.load_study(study_name=spec.study_name, storage=open_storage(spec.storage_url))
    states = [t.state.name for t in study.trials]
    assert states in (["FAIL"], ["FAIL", "FAIL"])  # the second may not have been drawn yet
    statuses = {runs.read_json(path)["status"] for path in tmp_path.rglob(runs.METRICS)}
    assert statuses == {"interrupted"}


def test_concurrent_trials_refuse_sqlite_and_share_a_journal_by_default(tmp_path):
    """The command line reaches the same study as ``optimize`` (trained above): here only
    what ``--concurrent`` changes before training."""
    args = [*quick_study(), "--trials", "2", "--concurrent", "2"]
    refused = compress_cli(*args, "--storage", f"sqlite:///{tmp_path}/s.db", cwd=tmp_path)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "for --workers or --concurrent use a new --study-name" in refused.stderr
    assert not (tmp_path / "out").exists()
    spec = quick_spec(tmp_path / "out", concurrent=2)
    assert spec.storage_url == f"journal:{(tmp_path / 'out/pareto.journal').resolve()}"


def test_runs_in_threads_draw_their_curves_at_once_without_pyplot(tmp_path, monkeypatch):
    """pyplot's global figure registry is not thread-safe, and packed runs draw their
    curves from their threads: figures are made without it (importing it fails here)."""
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    history = [
        {"epoch": e, "train_acc": e / 4, "val_acc": e / 5, "train_loss": 1 / e, "val_loss": 2 / e}
        for e in (1, 2, 3)
    ]
    directories = [tmp_path / str(index) for index in range(4)]
    together = threading.Barrier(len(directories))

    def draw(directory):
        directory.mkdir()
        together.wait()
        return plot_curves(history, directory, directory.name)

    with ThreadPoolExecutor(len(directories)) as pool:
        written = [path for paths in pool.map(draw, directories) for path in paths]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == [
        f"{index}/{name}.png" for index in range(4) for name in ("accuracy", "loss")
    ]
    assert all(path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for path in written)
