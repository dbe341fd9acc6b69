"""Where a study lives, and how a trial whose worker died is noticed.

- One process: a SQLite file beside the results (``OUT/NAME.db``).
- Several worker processes on one machine (``--workers N``), or trials packed in one
  (``--concurrent K``): Optuna's journal file (``OUT/NAME.journal``); SQLite's file lock
  makes concurrent writers fail.
- Several machines: an RDB URL (``postgresql://user@host/db``) given to every machine.

A worker that is killed leaves its trial RUNNING. Two mechanisms turn such a trial into
FAIL and queue its parameters again (``RetryHeartbeatStaleTrialCallback``): on RDB storages,
Optuna's heartbeat (a trial silent for ``GRACE_S`` seconds, whichever machine ran it);
on any storage, a check of the worker's process id for trials of this machine, done
when a study opens and before every trial, so a killed local worker is seen at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import warnings
from pathlib import Path

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from compress.errors import UsageError, first_line
from compress.runs import mask_secrets

JOURNAL = "journal:"
HEARTBEAT_S = 10
GRACE_S = 30
MAX_RETRY = 2
WORKER_ATTR = "worker"  # trial user attr: {"host": ..., "pid": ...}


def default_storage(out: Path, study_name: str, writers: int = 1) -> str:
    """The study's file in ``out``: the one that exists, else journal for concurrent trials."""
    journal, sqlite = out / f"{study_name}.journal", out / f"{study_name}.db"
    if journal.exists() or (writers > 1 and not sqlite.exists()):
        return f"{JOURNAL}{journal.resolve()}"
    return f"sqlite:///{sqlite.resolve()}"


def check_concurrency(url: str, writers: int) -> None:
    """SQLite is refused to concurrent trials: it locks under concurrent writers, and
    without row locks two threads can both take the same queued trial."""
    if writers > 1 and url.startswith("sqlite"):
        raise UsageError(
            f"{url} is SQLite, which locks under concurrent writers: for --workers or "
            "--concurrent use a new --study-name (a journal file) or --storage postgresql://..."
        )


def masked(text: str) -> str:
    """``text`` with the password of any ``scheme://user:password@host`` URL hidden."""
    return mask_secrets(text)


def _check_journal(path: Path) -> None:
    if path.is_dir():
        raise UsageError(f"journal storage {path} is a directory, not a file")
    if path.exists() and path.stat().st_size:
        with path.open("rb") as handle:
            first = handle.readline()
        try:
            json.loads(first)
        except ValueError:
            raise UsageError(f"{path} is not an Optuna journal file") from None


def _check_sqlite(url: str, must_exist: bool) -> None:
    """Refuse a SQLite file that is not an Optuna database: Optuna would add its tables
    to another program's database, or turn an empty file into a study store."""
    path = Path(url.removeprefix("sqlite:///"))
    if path.is_dir():
        raise UsageError(f"SQLite storage {path} is a directory, not a file")
    if not path.exists():
        if must_exist:
            raise UsageError(f"no study database {path}")
        return
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("select name from sqlite_master")}
    except sqlite3.DatabaseError as error:
        raise UsageError(f"{path} is not a SQLite database: {error}") from None
    if "studies" not in tables and (tables or must_exist):
        raise UsageError(f"{path} is not an Optuna study database")


def check_storage(url: str, must_exist: bool = False) -> None:
    """Refuse, before anything is created, a file storage that is not Optuna's.
    ``must_exist``: the storage must hold studies already (``study show`` makes none)."""
    if url.startswith(JOURNAL):
        path = Path(url.removeprefix(JOURNAL))
        _check_journal(path)
        if must_exist and not path.exists():
            raise UsageError(f"no study journal {path}")
    elif url.startswith("sqlite:///"):
        _check_sqlite(url, must_exist)


def open_storage(url: str, must_exist: bool = False) -> optuna.storages.BaseStorage:
    """A journal file for ``journal:PATH``; any other URL is an RDB with a heartbeat."""
    check_storage(url, must_exist)
    if url.startswith(JOURNAL):
        path = Path(url.removeprefix(JOURNAL))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    try:
        with warnings.catch_warnings():  # the heartbeat is "experimental" since Optuna 2.8
            warnings.simplefilter("ignore", ExperimentalWarning)
            retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
            return RDBStorage(
                url,
                heartbeat_interval=HEARTBEAT_S,
                grace_period=GRACE_S,
                heartbeat_stale_trial_callback=retry,
            )
    except ImportError as error:
        raise UsageError(
            f"storage {masked(url)}: {error} (for PostgreSQL: pip install 'compress-cnn[postgres]')"
        ) from None
    except Exception as error:  # SQLAlchemy's errors: bad URL, server unreachable
        reason = masked(first_line(error))
        raise UsageError(f"cannot open storage {masked(url)}: {reason}") from None


def claim(trial: optuna.Trial) -> None:
    """Record which process runs ``trial``, so a dead worker's trial can be found."""
    trial.set_user_attr(WORKER_ATTR, {"host": socket.gethostname(), "pid": os.getpid()})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_orphaned_trials(study: optuna.Study) -> list[int]:
    """Mark RUNNING trials whose worker on this machine has died FAIL, and queue them again."""
    host, failed = socket.gethostname(), []
    storage = study._storage  # Optuna has no public call to fail another process's trial
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER_ATTR)
        if not worker or worker["host"] != host or _alive(worker["pid"]):
            continue
        message = f"WorkerDied: worker process {worker['pid']} ended mid-trial"
        try:
            storage.set_trial_user_attr(trial._trial_id, "error", message)
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue  # another worker got there first
        dead: FrozenTrial = storage.get_trial(trial._trial_id)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, dead)
        failed.append(trial.number)
    return failed
