"""Ctrl-C and SIGTERM that cannot be lost.

Python raises ``KeyboardInterrupt`` wherever the main thread is when the signal arrives. A
library that catches everything there (torch-pruning's optional imports use bare
``except:``) swallows it: a study worker was seen training on after Ctrl-C. The handler
installed here also records the request, and the training loop ``check``s it after
every step, so the interrupt ends the run at the latest one step later.
"""

from __future__ import annotations

import signal
import threading

_requested = threading.Event()


def _interrupt(signum: int, frame: object) -> None:
    _requested.set()
    raise KeyboardInterrupt


def install() -> None:
    """SIGINT and SIGTERM interrupt this process as Ctrl-C does, and are remembered (from
    the main thread, the only one that handles signals)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _interrupt)
        signal.signal(signal.SIGTERM, _interrupt)


def requested() -> bool:
    return _requested.is_set()


def check() -> None:
    """Raise ``KeyboardInterrupt`` if an interrupt was requested, swallowed or not."""
    if requested():
        raise KeyboardInterrupt


def handled() -> None:
    """The interrupt has ended what it was meant to end; later work in this process runs."""
    _requested.clear()
