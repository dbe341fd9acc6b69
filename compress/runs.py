"""Run directories: what a run writes, written so that no file is ever half there.

A run directory holds ``config.json`` (everything needed to reproduce the run),
``metrics.json`` (status, final numbers and per-epoch history), ``checkpoint.pt`` (the
training state after the last completed epoch; ``torch.load(weights_only=True)``),
``model.safetensors`` (final weights), ``history.csv`` (the epochs as a table) and the
curves as PNG files.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import fcntl
import io
import json
import math
import os
import platform
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from compress.errors import UsageError, first_line

CONFIG, METRICS, CHECKPOINT, WEIGHTS, LOCK, HISTORY = (
    "config.json",
    "metrics.json",
    "checkpoint.pt",
    "model.safetensors",
    ".lock",
    "history.csv",
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


def strict(value: Any) -> Any:
    """``value`` with every NaN or infinity made ``None``: JSON has no such numbers, and
    a diverged run's losses are NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: strict(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [strict(item) for item in value]
    return value


def dumps(payload: Any) -> str:
    """Strict JSON text (no NaN or Infinity), indented."""
    return json.dumps(strict(payload), indent=2, allow_nan=False)


def write_json(path: Path, payload: Any) -> None:
    """Strict JSON, written atomically."""
    text = dumps(payload) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


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


class TensorBoardLog:
    """Each epoch record's numbers as TensorBoard scalars in ``run_dir/tensorboard``,
    where the ``tensorboard`` package is installed (``pip install 'compress-cnn[tensorboard]'``);
    nothing otherwise. ``write`` takes the whole history and logs what is new in it."""

    def __init__(self, run_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch's module needs the tensorboard package
            self.writer = None
        else:
            self.writer = SummaryWriter(str(run_dir / "tensorboard"))
        self.logged = 0

    def write(self, history: list[dict[str, Any]]) -> None:
        if self.writer is None:
            return
        for step, record in enumerate(history[self.logged :], start=self.logged + 1):
            for key, value in record.items():
                if key != "epoch" and _is_number(value, optional=False):
                    self.writer.add_scalar(f"{record.get('phase', 'train')}/{key}", value, step)
        self.logged = len(history)
        self.writer.flush()


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist; is this a run directory?") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory, not a JSON file") from None
    except NotADirectoryError:
        raise UsageError(f"{path.parent} is a file, not a run directory") from None
    except UnicodeDecodeError:
        raise UsageError(f"cannot read {path}: it is not text") from None
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read {path}: {error}") from None


SECRET = re.compile(r"(\w[\w+.-]*://[^:/@\s]+:)[^@\s]+@")


def mask_secrets(text: str) -> str:
    """Passwords in URLs (``scheme://user:password@host``) replaced by ``***``: they never
    reach a record or a message."""
    return SECRET.sub(r"\1***@", text)


EPOCH_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """A run's ``metrics.json``, checked to have the shape this toolkit writes: a
    UsageError names what is wrong rather than a table failing halfway."""
    path = run_dir / METRICS
    metrics = read_json(path)

    def wrong(what: str) -> UsageError:
        return UsageError(f"{path} is not a run's metrics: {what}")

    if not isinstance(metrics, dict):
        raise wrong(f"a JSON {type(metrics).__name__}, not an object")
    if not isinstance(metrics.get("label"), str):
        raise wrong("it has no label")
    history = metrics.get("history")
    if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
        raise wrong("its history is not a list of epoch records")
    for record in history:
        bad = [k for k in EPOCH_KEYS if not _is_number(record.get(k), optional=k != "epoch")]
        if bad:
            raise wrong(f"epoch record {record.get('epoch')!r} has no number for {bad[0]}")
    for key, value in metrics.items():
        numbers = value if isinstance(value, list) else [value]  # e.g. a spread: two numbers
        if key.endswith(("params", "macs", "flops", "_bytes", "_ms", "_acc")) and not all(
            _is_number(number, optional=True) for number in numbers
        ):
            raise wrong(f"{key} is {value!r}, not a number")
    return metrics


def _is_number(value: Any, optional: bool) -> bool:
    if value is None:
        return optional  # a diverged epoch's NaN loss is recorded as null
    return isinstance(value, int | float) and not isinstance(value, bool)


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


def check_root(root: Path) -> None:
    """A results root must be a directory, or creatable as one."""
    for path in (root, *root.parents):
        try:
            exists, is_dir = path.exists(), path.is_dir()
        except OSError as error:  # e.g. a name longer than the file system allows
            raise UsageError(f"cannot write results under {root}: {error.strerror}") from None
        if exists:
            if not is_dir:
                raise UsageError(f"cannot write results under {root}: {path} is a file")
            return


@contextlib.contextmanager
def log_warnings(path: Path) -> Iterator[None]:
    """Python warnings (a library's notes on itself) appended to ``path`` instead of
    printed between a command's own lines."""
    import warnings

    def write(message, category, filename, lineno, file=None, line=None) -> None:
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as log:
                log.write(warnings.formatwarning(message, category, filename, lineno, line))

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = write
        yield


RECORDS = (CONFIG, METRICS, CHECKPOINT, WEIGHTS, LOCK, HISTORY, "error.log")


def check_output(path: Path, what: str) -> None:
    """A file a command is about to write: never over a run's own record, never where a
    directory is, and under directories that are, or can be, directories."""
    if path.name in RECORDS and (path.parent / CONFIG).is_file():
        raise UsageError(f"{what} {path} is a record of the run in {path.parent}: write elsewhere")
    if path.is_dir():
        raise UsageError(f"{what} {path} is a directory: name a file")
    check_root(path.parent)


def new_run_dir(root: Path, name: str) -> Path:
    """A fresh directory ``root/name-YYYYmmdd-HHMMSS[-k]``."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    check_root(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create {root}: {error.strerror}") from None
    for attempt in range(1000):
        path = root / (f"{name}-{stamp}" + (f"-{attempt}" if attempt else ""))
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise UsageError(f"cannot create a run directory under {root}")


@contextlib.contextmanager
def held(run_dir: Path) -> Iterator[None]:
    """The run directory, locked for this process: a second process that would train the
    same run (two ``--resume``) is refused. Leftovers of an earlier process that was
    killed mid-write (``.*.tmp``) are removed once the lock is held."""
    try:
        handle = (run_dir / LOCK).open("a")
    except OSError as error:
        raise UsageError(f"cannot lock {run_dir}: {error.strerror}: {run_dir / LOCK}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"{run_dir} is being trained by another process") from None
        for leftover in run_dir.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)
        yield


def update_metrics(run_dir: Path, updates: dict[str, Any]) -> None:
    """Merge ``updates`` into a finished run's ``metrics.json`` (e.g. what an export
    measured), under the run's lock, one key level deep."""
    with held(run_dir):
        metrics = read_json(run_dir / METRICS)
        for key, value in updates.items():
            if isinstance(value, dict) and isinstance(metrics.get(key), dict):
                metrics[key] = {**metrics[key], **value}
            else:
                metrics[key] = value
        write_json(run_dir / METRICS, metrics)


def save_weights(path: Path, model: torch.nn.Module) -> None:
    """The network's final weights as safetensors, written atomically."""
    from safetensors.torch import save_model

    atomic_write(path, lambda tmp: save_model(model, str(tmp)))


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """The training state, serialised in memory first: a disk that is full then fails with
    the system's own message ("No space left on device"), not a zip writer's."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getbuffer()))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint, or a UsageError that says it is missing or corrupted."""
    if not path.exists():
        raise UsageError(f"{path} does not exist: the run has no completed epoch to resume")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        reason = first_line(error)
        raise UsageError(f"checkpoint {path} is corrupted: {reason}") from None


def fail_abandoned(root: Path) -> list[Path]:
    """Runs under ``root`` recorded as running whose process is gone (their lock is
    free: a worker killed mid-trial), marked failed with the reason; their checkpoint
    stays for ``--resume``."""
    marked = []
    for run_dir in find_runs(root):
        try:
            metrics = read_json(run_dir / METRICS)
            if not isinstance(metrics, dict) or metrics.get("status") != "running":
                continue
            with held(run_dir):
                reason = "the process training it ended without a word (killed?)"
                write_json(run_dir / METRICS, {**metrics, "status": "failed", "error": reason})
        except UsageError:  # no record yet, or a process still trains it
            continue
        marked.append(run_dir)
    return marked


def find_runs(root: Path) -> list[Path]:
    """Run directories under ``root`` (those with a config.json), newest first."""
    if not root.is_dir():
        return []
    runs = [p.parent for p in root.glob(f"*/{CONFIG}")]
    return sorted(runs, key=lambda p: p.stat().st_mtime, reverse=True)
