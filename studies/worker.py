"""The entry point of a study's worker process, kept light on purpose.

A spawned worker imports its target's module before running it; this module imports
nothing heavy, so the worker's signal handling is in place before torch loads (seconds),
and a Ctrl-C during that start ends it with one line, not an import traceback.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import sys
from typing import Any, NoReturn

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> None:
    """Linux: this worker gets SIGTERM when the study process that started it dies, even by
    SIGKILL, so no worker trains on for a study nobody runs."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def work(spec: dict[str, Any], threads: int) -> None:
    """Run one worker's share of a study (``spec``: a ``StudySpec`` as a dict), quietly:
    trials record their own errors. Ctrl-C or SIGTERM ends it with one line."""
    _die_with_parent()
    early: list[int] = []  # an interrupt during the imports, which a library may swallow

    def interrupt(signum: int, frame: object) -> None:
        early.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    index = spec["worker_index"]
    try:
        import optuna
        import torch

        from compress import interrupts
        from compress.reports import stderr_console
        from compress.runs import log_warnings
        from studies.study import StudySpec, optimize

        interrupts.install()
        if early:  # it came during the imports and was swallowed there
            raise KeyboardInterrupt
        torch.set_num_threads(threads)
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        study = StudySpec(**spec)
        lines = stderr_console()  # a line per trial; the training itself stays quiet
        with log_warnings(study.directory / "warnings.log"):
            optimize(study, stderr_console(quiet=True), False, lines, f"worker {index}: ")
    except KeyboardInterrupt:
        _interrupted(index)
    except Exception:
        if early or _interrupt_requested():  # a library turned it into an error of its own
            _interrupted(index)  # (Optuna's journal lock, when it came inside its release)
        raise


def _interrupt_requested() -> bool:
    interrupts = sys.modules.get("compress.interrupts")
    return interrupts is not None and interrupts.requested()


def _interrupted(index: int) -> NoReturn:
    print(f"worker {index}: interrupted", file=sys.stderr)
    sys.exit(130)
