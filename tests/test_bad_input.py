"""Bad input ends in one line and exit code 2, and leaves nothing half-written.

Each case runs the command line in this process (``compress.cli.main``, what the
``compress`` script calls), which is quick; the cases that need signals, resource limits
or several processes run real processes in ``test_cli_run.py`` and ``test_study_workers.py``.
"""

import fcntl
import json
import sqlite3

import numpy as np
import pytest
import torch

from compress.cli import main
from compress.runs import mask_secrets

TINY = ["--dataset", "synthetic", "--train-size", "128", "--epochs", "1", "--batch-size", "64"]
TINY += ["--input-size", "16"]  # a quarter of the work of 32x32


def cli(capsys, *args):
    """(exit code, stdout, stderr) of ``compress ARGS``."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, *args, message):
    code, _, err = cli(capsys, *args)
    assert code == 2, err
    assert message in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A completed one-epoch run, copied by the tests that damage it."""
    out = tmp_path_factory.mktemp("finished")
    assert main(["run", "baseline", "--model", "resnet20", *TINY, "--out", str(out)]) == 0
    (run_dir,) = out.glob("resnet20-*")
    return run_dir


def copy_of(run_dir, where):
    import shutil

    return shutil.copytree(run_dir, where / run_dir.name)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "vgg16", "--input-size", "8"], "input size 8 is too small for vgg16"),
        (["--lr", "nan"], "--lr must be a finite number, got nan"),
        (["--lr", "inf"], "--lr must be a finite number, got inf"),
        (["--grad-clip", "nan"], "--grad-clip must be a finite number"),
        (["--momentum", "nan"], "--momentum must be a finite number"),
        (["--gamma", "nan"], "--gamma must be a finite number"),
        (["--label-smoothing", "nan"], "--label-smoothing must be a finite number"),
        (["--cuda-graph", "--device", "cpu"], "--cuda-graph: CUDA graphs need a CUDA device"),
        (["--input-size", "100000"], "needs more memory than is free"),
        (["--epochs", "0"], "--epochs 0 trains nothing: give --init"),
    ],
)
def test_a_run_refused_before_it_starts_writes_nothing(workdir, capsys, args, message):
    refused(capsys, "run", "baseline", *TINY, *args, "--out", "out", message=message)
    assert not (workdir / "out").exists()


def test_shards_are_checked_before_the_run_starts(workdir, capsys):
    data = workdir / "data"
    data.mkdir()
    x = np.zeros((64, 32, 32, 3), np.uint8)
    np.savez(data / "c-train.npz", x=x, y=np.arange(64) % 10)
    np.savez(data / "c-test.npz", x=x[:8], y=np.array([0, 1, 2, 3, 4, 5, 6, 12]))
    args = ["run", "baseline", "--dataset", "cifar10", "--data-dir", data, "--out", "out"]
    refused(capsys, *args, message="test labels in")
    (data / "c-test.npz").write_bytes((data / "c-train.npz").read_bytes()[:100])
    refused(capsys, *args, message="c-test.npz")
    assert not (workdir / "out").exists()


def test_a_file_where_a_directory_belongs_says_so(workdir, capsys, finished_run):
    (workdir / "file").write_text("not a directory")
    refused(capsys, "run", "baseline", *TINY, "--out", "file", message="file is a file")
    refused(capsys, "run", "baseline", *TINY, "--out", "file/x", message="file is a file")
    cifar = ["--dataset", "cifar10", "--data-dir", "file"]
    refused(capsys, "run", "baseline", *cifar, message="is a file, not a directory")
    refused(capsys, "compare", finished_run, "--png", "file/c.png", message="file is a file")
    study = ["study", "pareto", "--techniques", "prune", "--baselines", "", *TINY]
    refused(capsys, *study, "--out", "file", message="file is a file")


def test_user_text_is_shown_as_written(workdir, capsys):
    """rich markup must not eat brackets in paths or hints."""
    refused(
        capsys,
        "run",
        "baseline",
        "--dataset",
        "cifar10",
        "--data-dir",
        "data/[bold]x[/bold]y",
        message="data/[bold]x[/bold]y does not exist",
    )


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ([1], "a JSON list, not an object"),
        ({"label": "x", "history": "abc"}, "its history is not a list"),
        ({"history": []}, "it has no label"),
        ({"label": "x", "history": [{"epoch": 1, "train_loss": "a"}]}, "no number for"),
        ({"label": "x", "history": [], "params": "many"}, "params is 'many'"),
    ],
)
def test_compare_refuses_metrics_of_another_shape(workdir, capsys, metrics, message):
    run_dir = workdir / "odd"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    refused(capsys, "compare", run_dir, message=message)


def test_compare_refuses_binary_metrics(workdir, capsys):
    run_dir = workdir / "binary"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_bytes(bytes(range(256)))
    refused(capsys, "compare", run_dir, message="it is not text")


def test_resume_of_damaged_records_says_what_is_wrong(workdir, capsys, finished_run):
    run_dir = copy_of(finished_run, workdir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    (run_dir / "metrics.json").write_text(json.dumps({**metrics, "status": "interrupted"}))
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    for epoch in ("abc", -5, 7):
        torch.save({**checkpoint, "epoch": epoch}, run_dir / "checkpoint.pt")
        refused(capsys, "run", "baseline", "--resume", run_dir, message="is corrupted: epoch")
    (run_dir / "config.json").write_bytes(b"\x00\xff\xfe binary")
    refused(capsys, "run", "baseline", "--resume", run_dir, message="it is not text")


def test_resume_of_a_completed_run_says_so_and_changes_nothing(workdir, capsys, finished_run):
    run_dir = copy_of(finished_run, workdir)
    before = (run_dir / "metrics.json").read_bytes()
    code, out, _ = cli(capsys, "run", "baseline", "--resume", run_dir)
    assert code == 0 and "is complete: nothing to resume" in out
    assert (run_dir / "metrics.json").read_bytes() == before


def test_a_run_being_trained_is_not_resumed_twice(workdir, capsys, finished_run):
    run_dir = copy_of(finished_run, workdir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    (run_dir / "metrics.json").write_text(json.dumps({**metrics, "status": "interrupted"}))
    with (run_dir / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as a first `--resume` holds it while it trains
        refused(capsys, "run", "baseline", "--resume", run_dir, message="another process")


def test_leftovers_of_a_killed_write_are_removed_on_resume(workdir, capsys, finished_run):
    run_dir = copy_of(finished_run, workdir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    (run_dir / "metrics.json").write_text(json.dumps({**metrics, "status": "interrupted"}))
    (run_dir / ".checkpoint.pt.abc123.tmp").write_bytes(b"")
    (run_dir / ".metrics.json.def456.tmp").write_bytes(b"")
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    torch.save({**checkpoint, "epoch": 1}, run_dir / "checkpoint.pt")
    config = json.loads((run_dir / "config.json").read_text())
    config["train"]["epochs"] = 2  # one epoch left to train
    (run_dir / "config.json").write_text(json.dumps(config))
    code, _, err = cli(capsys, "run", "baseline", "--resume", run_dir)
    assert code == 0, err
    assert not list(run_dir.glob(".*.tmp"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--study-name", "../../x"], "must be a name"),
        (["--study-name", "/tmp/abs"], "must be a name"),
        (["--techniques", ","], "--techniques names no technique"),
    ],
)
def test_bad_study_options_are_refused_before_any_training(workdir, capsys, args, message):
    refused(capsys, "study", "pareto", *TINY, "--out", "out", *args, message=message)
    assert not (workdir / "out").exists() and not (workdir.parent / "x").exists()


def test_study_storages_that_are_not_optunas_are_refused(workdir, capsys):
    study = ["study", "pareto", "--techniques", "prune", "--baselines", "", *TINY, "--out", "o"]
    (workdir / "notes.txt").write_text("my notes\n")
    refused(capsys, *study, "--storage", "journal:notes.txt", message="not an Optuna journal")
    assert (workdir / "notes.txt").read_text() == "my notes\n"
    refused(capsys, *study, "--storage", f"journal:{workdir}", message="is a directory")
    with sqlite3.connect(workdir / "other.db") as db:
        db.execute("create table accounts (name text)")
    url = f"sqlite:///{workdir / 'other.db'}"
    refused(capsys, *study, "--storage", url, message="not an Optuna study database")
    with sqlite3.connect(workdir / "other.db") as db:
        tables = {row[0] for row in db.execute("select name from sqlite_master")}
    assert tables == {"accounts"}  # Optuna added nothing to it
    assert not (workdir / "o").exists()  # nothing made for a refused study
    (workdir / "o").mkdir()
    (workdir / "o" / "empty.db").write_bytes(b"")
    refused(capsys, "study", "show", "empty", "--out", "o", message="not an Optuna study")
    assert (workdir / "o" / "empty.db").read_bytes() == b""


def test_a_password_in_a_storage_url_is_never_shown(workdir, capsys):
    url = "postgresql://me:hunter2@127.0.0.1:9/studies"
    code, _, err = cli(
        capsys, "study", "pareto", "--baselines", "", *TINY, "--storage", url, "--out", "o"
    )
    assert code == 2 and "hunter2" not in err and "me:***@127.0.0.1" in err
    assert mask_secrets(f"x {url} y") == "x postgresql://me:***@127.0.0.1:9/studies y"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["profile", "resnet20", "--repeats", "-5"], "--repeats must be >= 0, got -5"),
        (["profile", "ghostnet", "--width", "1e9"], "cannot build ghostnet"),
        (["profile", "ghostnet", "--width", "nan"], "--width must be a finite number"),
        (["profile", "resnet20", "--input-size", "100000"], "needs more memory than is free"),
        (["ghost", "fit", "--d", ","], "--d names no kernel"),
    ],
)
def test_bad_measurement_options(capsys, args, message):
    refused(capsys, *args, message=message)


def test_theory_of_a_huge_layer_costs_no_memory(capsys):
    code, out, _ = cli(capsys, "ghost", "theory", "--c", "100000", "--n", "100000")
    assert code == 0 and "2.0000" in out


def test_every_json_written_is_strict(workdir, capsys):
    """A diverged run's NaN losses are written as null, not as NaN."""
    diverging = ["--optimizer", "sgd", "--lr", "1e30"]
    code, _, err = cli(capsys, "run", "baseline", "--model", "resnet20", *TINY, *diverging)
    assert code == 2 and "marked failed" in err and len(err.strip().splitlines()) == 1
    (run_dir,) = (workdir / "runs").glob("resnet20-*")

    def reject(constant):
        raise ValueError(f"not JSON: {constant}")

    for name in ("metrics.json", "config.json"):
        json.loads((run_dir / name).read_text(), parse_constant=reject)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "loss became" in metrics["error"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--schedule", "onecycle", "--warmup-epochs", "1"], "--warmup-epochs must be shorter"),
        (["--seed", "18446744073709551616"], "--seed must be <= 9223372036854775807"),
    ],
)
def test_what_failed_after_training_is_refused_before(capsys, workdir, args, message):
    """The audit's cases: a ZeroDivisionError once training ended, a ValueError traceback."""
    refused(capsys, "run", "baseline", *TINY, *args, "--out", "out", message=message)
    assert not (workdir / "out").exists()


def test_version(capsys):
    code, out, _ = cli(capsys, "--version")
    assert code == 0 and out.startswith("compress ")


def test_post_training_quantization_defaults_to_the_bits_it_supports():
    from compress.spec import RunSpec

    spec = RunSpec.from_options("quantize", {"mode": "ptq"})
    assert (spec.uses[1].options.weight_bits, spec.uses[1].options.act_bits) == (8, 8)
    assert RunSpec.from_options("quantize", {}).uses[1].options.weight_bits == 4


@pytest.mark.parametrize("record", ["metrics.json", "config.json", "model.safetensors"])
def test_no_command_writes_over_a_runs_record(capsys, workdir, finished_run, record):
    run_dir = copy_of(finished_run, workdir)
    before = (run_dir / record).read_bytes()
    target = run_dir / record
    refused(capsys, "export", run_dir, "--out", target, message="is a record of the run")
    refused(capsys, "compare", run_dir, "--png", target, message="is a record of the run")
    assert (run_dir / record).read_bytes() == before


def test_report_keeps_an_existing_page_unless_forced(capsys, workdir, finished_run):
    copy_of(finished_run, workdir / "runs")
    (workdir / "page.md").write_text("the committed page")
    refused(capsys, "report", "page", "runs", message="page.md exists")
    assert (workdir / "page.md").read_text() == "the committed page"
    assert cli(capsys, "report", "page", "runs", "--force")[0] == 0
    assert (workdir / "page.md").read_text().startswith("# Results")
    refused(capsys, "report", "", "runs", message="the page needs a name")


def test_a_study_continued_with_other_objectives_is_refused(capsys, workdir):
    from clitools import quick_study

    args = [*quick_study("ghost"), "--epochs", "1", "--trials", "1"]
    assert cli(capsys, *args, "--objectives", "accuracy,macs")[0] == 0
    refused(
        capsys, *args, "--objectives", "accuracy,params",
        message="optimises accuracy,macs: continue it with those --objectives",
    )  # fmt: skip


def test_batchnorm_with_batches_of_one_is_refused_before_training(capsys, workdir):
    args = ["--dataset", "synthetic", "--train-size", "8", "--epochs", "1", "--batch-size", "1"]
    refused(capsys, "run", "baseline", "--model", "vgg16", *args, "--out", "out",
            message="BatchNorm needs at least 2 images")  # fmt: skip
    assert not (workdir / "out").exists()


def test_a_teacher_of_other_classes_and_an_unknown_teacher_leave_nothing(
    capsys, workdir, finished_run
):
    digits = ["--train-size", "64", "--epochs", "1", "--batch-size", "32", "--input-size", "16"]
    refused(capsys, "run", "distill", "--teacher", finished_run, *digits, "--out", "out",
            message="answers 4 classes, the data has 10")  # fmt: skip
    refused(capsys, "run", "distill", "--teacher", "notamodel", *digits, "--out", "out",
            message="unknown model 'notamodel'")  # fmt: skip
    assert not (workdir / "out").exists()  # no run, and no lock left in out/cache


def test_a_shard_claiming_more_images_than_memory_holds(capsys, workdir):
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (10**11, 32, 32, 3)}
    )
    (workdir / "data").mkdir()
    for split in ("train", "test"):
        with zipfile.ZipFile(workdir / "data" / f"{split}.npz", "w") as archive:
            archive.writestr("x.npy", header.getvalue())
            archive.writestr("y.npy", header.getvalue())
    refused(capsys, "run", "baseline", "--dataset", "cifar10", "--data-dir", "data", "--out",
            "out", message="cannot read shard")  # fmt: skip


def test_a_results_root_whose_name_is_too_long(capsys, workdir):
    refused(capsys, "run", "baseline", *TINY, "--out", "x" * 300, message="File name too long")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"techniques": []}, "are not one builder followed by others"),
        ({"input": [1, 2]}, "config.json is damaged: its input record"),
        ({"input": {"num_classes": 4, "image_size": 32, "input_size": 16, "mean": [0.5],
                    "std": [0.2, 0.2, 0.2]}}, "three means"),
        ({"input": {"num_classes": 4, "image_size": 32, "input_size": 0}}, "input record"),
        ({"input": {"num_classes": 4, "image_size": 32, "input_size": 100000}}, "input record"),
    ],
)  # fmt: skip
def test_a_hand_edited_config_is_refused_by_load_export_and_maps(
    capsys, workdir, finished_run, change, message
):
    from compress import RunLoadError, load

    run_dir = copy_of(finished_run, workdir)
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(RunLoadError, match=message):
        load(run_dir)
    refused(capsys, "export", run_dir, message=message)
    refused(capsys, "ghost", "maps", "--model", run_dir, message=message)
    assert not (run_dir / "model.onnx").exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("empty_csv", "is empty: a table needs at least its header"),
        ("binary_csv", "is not a readable CSV"),
        ("short_row", "line 2: 1 fields where the header has 3"),
        ("train_list", "its records do not read as a run's"),
        ("time_text", "its records do not read as a run's"),
        ("unnamed_technique", "its records do not read as a run's (KeyError: 'name')"),
    ],
)
def test_report_on_damaged_sources_ends_in_one_line_and_writes_nothing(
    capsys, workdir, finished_run, damage, message
):
    run_dir = copy_of(finished_run, workdir / "source")
    config_path, metrics_path = run_dir / "config.json", run_dir / "metrics.json"
    config, metrics = json.loads(config_path.read_text()), json.loads(metrics_path.read_text())
    if damage == "empty_csv":
        (workdir / "source/table.csv").write_text("")
    elif damage == "binary_csv":
        (workdir / "source/table.csv").write_bytes(b"\xff\xfe\x00a,b\n")
    elif damage == "short_row":
        (workdir / "source/table.csv").write_text("a,b,c\n1\n")
    elif damage == "train_list":
        config_path.write_text(json.dumps({**config, "train": [1]}))
    elif damage == "time_text":
        metrics_path.write_text(json.dumps({**metrics, "train_time_s": "abc"}))
    else:
        config_path.write_text(json.dumps({**config, "techniques": [{"options": {}}]}))
    refused(capsys, "report", "page", "source", message=message)
    assert not (workdir / "page").exists() and not (workdir / "page.md").exists()


def test_study_show_of_a_plain_optuna_study_and_a_name_taken_by_a_file(capsys, workdir):
    import optuna

    (workdir / "out").mkdir()
    plain = optuna.create_study(study_name="plain", storage="sqlite:///out/plain.db")
    plain.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    capsys.readouterr()  # Optuna's own log lines
    refused(capsys, "study", "show", "plain", "--out", "out",
            message="was not made by `compress study pareto`")  # fmt: skip
    (workdir / "out/other.journal").write_text("")
    refused(capsys, "study", "pareto", "--study-name", "other.journal", "--out", "out",
            message="out/other.journal is a file")  # fmt: skip
    assert sorted(p.name for p in (workdir / "out").iterdir()) == ["other.journal", "plain.db"]


@pytest.mark.parametrize(
    "damage",
    [
        {"optimizer": {"state": {}, "param_groups": []}},
        {"scheduler": {"last_epoch": "x"}},
        {"rng_data": torch.zeros(3, dtype=torch.uint8)},
    ],
)
def test_a_tampered_training_state_names_the_checkpoint(capsys, workdir, finished_run, damage):
    run_dir = copy_of(finished_run, workdir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    (run_dir / "metrics.json").write_text(json.dumps({**metrics, "status": "interrupted"}))
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    torch.save({**checkpoint, **damage}, run_dir / "checkpoint.pt")
    refused(capsys, "run", "baseline", "--resume", run_dir,
            message="is corrupted: its training state does not load")  # fmt: skip
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "interrupted"


def test_a_lock_that_is_a_directory_and_a_file_system_that_says_no(capsys, workdir, finished_run):
    run_dir = copy_of(finished_run, workdir)
    (run_dir / ".lock").unlink(missing_ok=True)
    (run_dir / ".lock").mkdir()
    refused(capsys, "export", run_dir, "--repeats", "0", message="cannot lock")
    (workdir / "a_file").write_text("")
    refused(capsys, "export", finished_run, "--out", workdir / "a_file/m.onnx",
            message="a_file is a file")  # fmt: skip


def test_a_full_disk_while_export_records_its_check(capsys, workdir, finished_run, monkeypatch):
    import errno

    from compress import runs

    run_dir = copy_of(finished_run, workdir)
    before = (run_dir / "metrics.json").read_bytes()

    def full(path, _value):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(runs, "write_json", full)
    refused(capsys, "export", run_dir, "--repeats", "0",
            message="No space left on device: ")  # fmt: skip
    assert (run_dir / "metrics.json").read_bytes() == before


def test_a_sibling_that_is_not_a_run_does_not_stop_a_run_with_a_reference(capsys, workdir):
    (workdir / "out/odd").mkdir(parents=True)
    (workdir / "out/odd/config.json").write_text("[]")
    (workdir / "out/odd/metrics.json").write_text('{"status": "completed"}')
    code, out, err = cli(capsys, "run", "ghost", "--backbone", "resnet20", *TINY, "--out", "out")
    assert code == 0, err  # ghost reads its reference among the siblings: the odd one is skipped
    assert "Best top-1" in out


def test_a_truncated_data_cache_ends_in_one_line(capsys, workdir):
    (workdir / "data").mkdir()
    arrays = {"train_x": np.zeros((4, 32, 32, 3), np.uint8), "train_y": np.zeros(4, np.uint8)}
    np.savez(workdir / "data/cifar10-uint8.npz", **arrays, test_x=arrays["train_x"],
             test_y=arrays["train_y"])  # fmt: skip
    cache = workdir / "data/cifar10-uint8.npz"
    cache.write_bytes(cache.read_bytes()[:200])
    refused(capsys, "run", "baseline", "--dataset", "cifar10", "--data-dir", "data", "--out",
            "out", message="corrupted data cache")  # fmt: skip
