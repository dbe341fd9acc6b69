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
        "loss.png",
        "metrics.json",
        "model.safetensors",
    ]
    for path in outcome.run_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path.name
