"""Run directories: what a run writes, written so that no file is ever half there.

A run directory holds ``config.json`` (everything needed to reproduce the run),
``metrics.json`` (status, final numbers and per-epoch history), ``checkpoint.pt`` (the
training state after the last completed epoch; ``torch.load(weights_only=True)``),
``model.safetensors`` (final weights) and the curves as PNG files.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import platform
import sys
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from compress.errors import UsageError

CONFIG, METRICS, CHECKPOINT, WEIGHTS = (
    "config.json",
    "metrics.json",
    "checkpoint.pt",
    "model.safetensors",
)
PACKAGES = ("compress-cnn", "torch", "torchvision", "timm", "torch-pruning", "brevitas", "optuna")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same directory, then rename over ``path``.

    The file gets the permissions any new file of the user gets (mkstemp's are 0600).
    """
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(temporary))
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json(path: Path, payload: Any) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(payload, indent=2) + "\n"))


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """``rows`` as CSV with ``columns`` (other keys left out); dicts and lists as JSON."""

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, columns, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow(
                    {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in row.items()}
                )

    atomic_write(path, write)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist; is this a run directory?") from None
    except (OSError, json.JSONDecodeError) as error:
        raise UsageError(f"cannot read {path}: {error}") from None


def versions() -> dict[str, str]:
    """Python, platform and package versions, recorded with every run."""
    found = {"python": sys.version.split()[0], "platform": platform.platform()}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    found["cuda"] = torch.version.cuda or "none"
    return found


def new_run_dir(root: Path, name: str) -> Path:
    """A fresh directory ``root/name-YYYYmmdd-HHMMSS[-k]``."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    root.mkdir(parents=True, exist_ok=True)
    for attempt in range(1000):
        path = root / (f"{name}-{stamp}" + (f"-{attempt}" if attempt else ""))
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise UsageError(f"cannot create a run directory under {root}")


def save_weights(path: Path, model: torch.nn.Module) -> None:
    """The network's final weights as safetensors, written atomically."""
    from safetensors.torch import save_model

    atomic_write(path, lambda tmp: save_model(model, str(tmp)))


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint, or a UsageError that says it is missing or corrupted."""
    if not path.exists():
        raise UsageError(f"{path} does not exist: the run has no completed epoch to resume")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(f"checkpoint {path} is corrupted: {reason}") from None


def find_runs(root: Path) -> list[Path]:
    """Run directories under ``root`` (those with a config.json), newest first."""
    if not root.is_dir():
        return []
    runs = [p.parent for p in root.glob(f"*/{CONFIG}")]
    return sorted(runs, key=lambda p: p.stat().st_mtime, reverse=True)
