"""Run the `compress` command line in a real process, as a user would."""

import subprocess
import sys
from pathlib import Path


def compress_cli(
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


# A small study: two techniques on ResNet-20, synthetic data, no baselines, results in out/.
QUICK_STUDY = [
    "study",
    "pareto",
    "--techniques",
    "ghost,prune",
    "--backbone",
    "resnet20",
    "--baselines",
    "",
    "--dataset",
    "synthetic",
    "--batch-size",
    "128",
    "--out",
    "out",
]
