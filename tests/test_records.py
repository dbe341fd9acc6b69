"""What a run writes: permissions, and the files a user reads."""

import os
import stat

from rich.console import Console

from compress.runner import run


def test_every_file_a_run_writes_gets_the_users_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        outcome = run(
            "baseline",
            tmp_path,
            console=Console(quiet=True),
            model="resnet20",
            dataset="synthetic",
            train_size=128,
            epochs=1,
            batch_size=128,
            input_size=16,
        )
    finally:
        os.umask(previous)
    files = sorted(p.name for p in outcome.run_dir.iterdir())
    assert files == [
        ".lock",  # held while the run trains
        "accuracy.png",
        "checkpoint.pt",
        "config.json",
        "history.csv",
        "loss.png",
        "metrics.json",
        "model.safetensors",
    ]
    for path in outcome.run_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path.name


def test_epochs_reach_tensorboard_where_it_is_installed(tmp_path, monkeypatch):
    """torch.utils.tensorboard needs the tensorboard package (an optional extra); a
    stand-in writer shows what a run logs: every number of every epoch, by phase."""
    import sys
    import types

    logged = []

    class Writer:
        def __init__(self, log_dir):
            logged.append(("dir", log_dir))

        def add_scalar(self, tag, value, step):
            logged.append((tag, value, step))

        def flush(self):
            pass

    monkeypatch.setitem(
        sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer)
    )
    outcome = run(
        "prune", tmp_path, model="resnet20", dataset="synthetic", train_size=128, test_size=64,
        batch_size=64, input_size=16, epochs=1, finetune_epochs=1, curves=False,
    )  # fmt: skip
    assert logged[0] == ("dir", str(outcome.run_dir / "tensorboard"))
    history = outcome.metrics["history"]
    assert ("train/val_acc", history[0]["val_acc"], 1) in logged
    assert ("finetune/val_acc", history[1]["val_acc"], 2) in logged  # the fine-tune's epoch
    assert len([entry for entry in logged if entry[0].endswith("/val_acc")]) == 2  # once each
