"""Run the `compress` command line as a user would.

``compress_cli`` runs it in this process (what the ``compress`` script calls, without
starting Python and importing torch again: tests stay fast) and returns what a process
would: exit code, stdout, stderr. ``compress_process`` starts a real process, for what
only a process shows (signals, worker processes, entry points, the environment).
"""

import contextlib
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

from compress.cli import main


def compress_process(
    *args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "compress.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def compress_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    out, err = io.StringIO(), io.StringIO()
    before = Path.cwd()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(arg) for arg in args])
            except SystemExit as exit_:  # argparse: --help, or its own one-line errors
                code = exit_.code
    finally:
        os.chdir(before)
        for each, handler in handlers.items():
            signal.signal(each, handler)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def quick_study(techniques: str = "ghost,prune") -> list[str]:
    """A small study on ResNet-20, synthetic data at 16x16 (a quarter of the work of
    32x32), one batch of 128 an epoch, no baselines, results in out/. ``ghost`` alone where
    no trial needs to prune: no trained backbone to wait for, and no torch-pruning to
    import in each process."""
    return [
        "study",
        "pareto",
        "--techniques",
        techniques,
        "--backbone",
        "resnet20",
        "--baselines",
        "",
        "--dataset",
        "synthetic",
        "--train-size",
        "128",
        "--test-size",
        "64",
        "--batch-size",
        "128",
        "--input-size",
        "16",
        "--out",
        "out",
    ]


# A run small enough for a unit test: synthetic images, one short pass, on the CPU.
QUICK_SYNTHETIC = {
    "dataset": "synthetic",
    "train_size": 128,
    "test_size": 64,
    "batch_size": 64,
    "input_size": 16,
    "precise_bn": 64,
    "device": "cpu",
}
