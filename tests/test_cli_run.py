"""`compress run` in real processes: the default job, records, Ctrl-C and resume, bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from clitools import compress_cli
from rich.console import Console
from safetensors.torch import load_file

from compress import interrupts
from compress.engine import TrainingInterrupted
from compress.registry import create_model
from compress.runner import run

# 16x16: a quarter of the work of 32x32, and what these tests check does not depend on it
QUICK = ["--dataset", "synthetic", "--train-size", "256", "--epochs", "5", "--batch-size", "64"]
QUICK += ["--input-size", "16"]


def only_run_dir(root: Path) -> Path:
    (run_dir,) = [p for p in root.iterdir() if p.is_dir()]
    return run_dir


def test_the_default_ghost_run_learns_digits_and_writes_a_complete_record(tmp_path):
    result = compress_cli("run", "ghost", "--s", "2", "--d", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Best top-1" in result.stdout and "Mult-Adds" in result.stdout
    run_dir = only_run_dir(tmp_path / "runs")
    assert run_dir.name.startswith("ghost-ghostnet-s2d3-digits-")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs_done"] == 8
    assert metrics["best_val_acc"] >= 0.9  # 95.6% on the reference machine
    assert metrics["macs"] == 5_539_376 and metrics["params"] == 3_914_318
    history = metrics["history"]
    assert len(history) == 8 and history[0]["epoch"] == 1
    assert metrics["final_val_acc"] == history[-1]["val_acc"]
    # BN statistics recomputed before each evaluation: a net tests like it trains from the
    # first epochs on (with running averages of ~22 steps it tested at chance, ~10%, after
    # two epochs while training at 63%)
    assert history[1]["train_acc"] > 0.4
    assert all(r["val_acc"] > r["train_acc"] - 0.05 for r in history), history
    config = json.loads((run_dir / "config.json").read_text())
    assert config["techniques"] == [
        {
            "name": "ghost",
            "options": {
                "model": "ghostnet",
                "backbone": None,
                "width": 1.0,
                "s": 2,
                "d": 3,
                "keep_first": True,
                "cifar_strides": False,
                "fit_images": 512,
                "reconstruct": True,
            },
        }
    ]
    assert config["train"]["optimizer"] == "adam" and config["data"]["dataset"] == "digits"
    assert config["versions"]["torch"] == torch.__version__.split("+")[0] or config["versions"]
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 8
    model = create_model("ghostnet", num_classes=10)
    model.load_state_dict(load_file(run_dir / "model.safetensors"))
    for name in ("accuracy.png", "loss.png"):
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(run_dir.glob("*.tmp"))


def test_json_output_and_the_reference_column(tmp_path):
    base = compress_cli(
        "run", "baseline", "--model", "resnet20", *QUICK, "--epochs", "1", cwd=tmp_path
    )
    assert base.returncode == 0, base.stderr
    ghost = compress_cli(
        "run", "ghost", "--backbone", "resnet20", *QUICK, "--epochs", "1", cwd=tmp_path
    )
    assert ghost.returncode == 0, ghost.stderr
    assert "reference: resnet20" in ghost.stdout
    as_json = compress_cli(
        "run", "ghost", "--backbone", "resnet20", *QUICK, "--epochs", "1", "--json", cwd=tmp_path
    )
    record = json.loads(as_json.stdout)
    # 21,270,784 at 32x32: a quarter of it at 16x16, but for the 64x4 classifier's 256
    assert record["status"] == "completed" and record["macs"] == (21_270_784 - 256) // 4 + 256
    assert Path(tmp_path / record["run_dir"]).is_dir() and "history" not in record


def wait_for(pattern: str, root: Path, process: subprocess.Popen, limit: float = 300) -> None:
    deadline = time.monotonic() + limit
    while not list(root.glob(pattern)):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)


def test_ctrl_c_keeps_a_checkpoint_and_resume_ends_where_an_uninterrupted_run_does(tmp_path):
    args = ["run", "baseline", "--model", "resnet20", *QUICK, "--epochs", "3", "--device", "cpu"]
    straight = compress_cli(*args, "--out", "straight", cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr

    process = subprocess.Popen(
        [sys.executable, "-m", "compress.cli", *args, "--out", "cut"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for("*/checkpoint.pt", tmp_path / "cut", process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err
    run_dir = only_run_dir(tmp_path / "cut")
    interrupted = json.loads((run_dir / "metrics.json").read_text())
    assert interrupted["status"] == "interrupted" and interrupted["epochs_done"] < 3

    resumed = compress_cli("run", "baseline", "--resume", str(run_dir), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    final = json.loads((run_dir / "metrics.json").read_text())
    expected = json.loads((only_run_dir(tmp_path / "straight") / "metrics.json").read_text())
    keys = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")
    assert [[r[k] for k in keys] for r in final["history"]] == [
        [r[k] for k in keys] for r in expected["history"]
    ]
    weights = load_file(run_dir / "model.safetensors")
    reference = load_file(only_run_dir(tmp_path / "straight") / "model.safetensors")
    assert all(torch.equal(weights[k], reference[k]) for k in reference)


def test_sigterm_mid_epoch_is_handled_like_ctrl_c(tmp_path):
    args = ["run", "baseline", "--model", "resnet20", *QUICK, "--epochs", "20", "--out", "cut"]
    process = subprocess.Popen(
        [sys.executable, "-m", "compress.cli", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for("*/checkpoint.pt", tmp_path / "cut", process)
    process.terminate()
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err
    metrics = json.loads((only_run_dir(tmp_path / "cut") / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["epochs_done"] >= 1


def test_a_ctrl_c_that_a_library_swallowed_still_ends_the_next_step(
    tmp_path, signal_handlers_restored
):
    """A bare ``except:`` in a library (torch-pruning's optional imports) once kept a study
    worker training after Ctrl-C: the request outlives the KeyboardInterrupt."""
    options = {
        "dataset": "synthetic",
        "train_size": 64,
        "batch_size": 32,
        "epochs": 1,
        "input_size": 16,
    }
    interrupts.install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)  # the handler raises here, in the library
    except:  # noqa: E722 - the library's bare except, swallowing it
        pass
    with pytest.raises(TrainingInterrupted):
        run("baseline", tmp_path, console=Console(quiet=True), model="resnet20", **options)
    (interrupted,) = tmp_path.glob("resnet20-*")
    assert json.loads((interrupted / "metrics.json").read_text())["epochs_done"] == 0
    interrupts.handled()  # what the command line does when a command ends
    run("baseline", tmp_path / "after", console=Console(quiet=True), model="resnet20", **options)


def test_a_full_disk_fails_the_run_in_one_line_and_says_so_in_its_record(tmp_path):
    """``ulimit -f``: the checkpoint (1 MiB) cannot be written; metrics.json still can."""
    import resource

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    result = subprocess.run(
        [sys.executable, "-m", "compress.cli", "run", "baseline", "--model", "resnet20", *QUICK],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        preexec_fn=small_files,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "File too large" in result.stderr and "marked failed" in result.stderr
    run_dir = only_run_dir(tmp_path / "runs")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "File too large" in metrics["error"]
    assert "Traceback" in (run_dir / "error.log").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "ghost", "--dataset", "imagenet"], "--dataset must be one of"),
        (["run", "ghost", "--batch-size", "5000"], "larger than the 1437 training images"),
        (["run", "ghost", "--device", "cuda"], "no CUDA device"),
        (["run", "ghost", "--s", "1"], "--s must be >= 2"),
        (["run", "ghost", "--d", "4"], "cheap kernel d must be a positive odd integer"),
        (["run", "prune2"], "unknown technique 'prune2'"),
        (["run", "baseline", "--model", "resnet21"], "did you mean resnet32, resnet20"),
        (["run", "ghost", "--epochs", "zero"], "invalid int value: 'zero'"),
        (["run", "ghost", "--resume", "nowhere"], "nowhere/config.json does not exist"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, message):
    result = compress_cli(*args, "--out", "out", cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_resume_refuses_a_corrupted_checkpoint_and_other_options(tmp_path):
    result = compress_cli(
        "run",
        "baseline",
        "--model",
        "resnet20",
        *QUICK,
        "--epochs",
        "1",
        "--out",
        "out",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(tmp_path / "out")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    (run_dir / "metrics.json").write_text(json.dumps({**metrics, "status": "interrupted"}))
    (run_dir / "checkpoint.pt").write_bytes(b"\x00broken")
    broken = compress_cli("run", "baseline", "--resume", str(run_dir), cwd=tmp_path)
    assert broken.returncode == 2 and "checkpoint.pt is corrupted" in broken.stderr
    extra = compress_cli("run", "baseline", "--resume", str(run_dir), "--lr", "0.1", cwd=tmp_path)
    assert extra.returncode == 2 and "drop --lr" in extra.stderr
    other = compress_cli("run", "ghost", "--resume", str(run_dir), cwd=tmp_path)
    assert other.returncode == 2 and "is a baseline run, not ghost" in other.stderr


def test_a_run_replays_from_a_config_file_and_keeps_its_history_as_csv(tmp_path):
    import csv

    args = ["--model", "resnet20", *QUICK, "--epochs", "1", "--lr", "0.003", "--out", "first"]
    first = compress_cli("run", "baseline", *args, "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    run_dir = tmp_path / json.loads(first.stdout)["run_dir"]
    with (run_dir / "history.csv").open() as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["epoch"] == "1" and float(row["val_acc"]) >= 0
    config = run_dir / "config.json"
    again = compress_cli("run", "baseline", "--config", config, "--epochs", "2", "--out", "again",
                         "--json", cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stderr
    replayed = json.loads(
        (tmp_path / json.loads(again.stdout)["run_dir"] / "config.json").read_text()
    )
    original = json.loads(config.read_text())
    assert replayed["train"] == {**original["train"], "epochs": 2}  # the flag wins
    assert replayed["data"] == original["data"]
    (tmp_path / "run.yaml").write_text("techniques:\n- name: ghost\n  options: {s: 3}\n")
    wrong = compress_cli("run", "baseline", "--config", "run.yaml", cwd=tmp_path)
    assert wrong.returncode == 2 and "describes ghost, not baseline" in wrong.stderr
    (tmp_path / "bad.yaml").write_text("techniques: [")
    bad = compress_cli("run", "baseline", "--config", "bad.yaml", cwd=tmp_path)
    assert bad.returncode == 2 and "is not JSON or YAML" in bad.stderr
