"""Several runs packed in one process, taking turns between training steps.

A 32x32 step is hundreds of small kernels that leave most of a GPU idle. Runs that each
hold a thread and their own CUDA stream, and hand over after every step, let one run's
kernels (or captured graph) execute while the next run launches its own. Exactly one
run executes Python at a time, in a fixed rotation, and each keeps its own global RNG
state across the hand-overs, so a run's numbers are those it gets alone (bit for bit on
CPU). A run that fails leaves the rotation; the others go on.
"""

from __future__ import annotations

import contextlib
import fcntl
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import IO

import torch

_local = threading.local()


class _Seat:
    """One run's place in the rotation and the global state it keeps across turns."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.rng_cpu: torch.Tensor | None = None
        self.rng_cuda: torch.Tensor | None = None

    def save(self) -> None:
        self.rng_cpu = torch.get_rng_state()
        if self.stream is not None:
            self.rng_cuda = torch.cuda.get_rng_state(self.device)

    def restore(self) -> None:
        if self.rng_cpu is not None:
            torch.set_rng_state(self.rng_cpu)
        if self.rng_cuda is not None:
            torch.cuda.set_rng_state(self.rng_cuda, self.device)


class Turns:
    """The rotation shared by the runs of one process (e.g. a study's packed trials).

    ``with turns.seat(device):`` around a run makes it take part; inside, ``turn()``
    (the engine calls it after every step) hands over to the next run and returns when
    this one's turn comes back. ``stop()`` (Ctrl-C) makes every run's next ``turn()``
    raise ``KeyboardInterrupt``, so each ends as it would alone: checkpointed.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._order: deque[_Seat] = deque()  # the head is the run that executes
        self._stopped = False

    def stop(self) -> None:
        with self._changed:
            self._stopped = True

    @property
    def stopped(self) -> bool:
        return self._stopped

    @contextlib.contextmanager
    def seat(self, device: str | torch.device = "cpu") -> Iterator[None]:
        seat = _Seat(torch.device(device))
        with self._changed:
            self._order.append(seat)
            self._changed.wait_for(lambda: self._order[0] is seat)
        _local.seat = (self, seat)
        stream = torch.cuda.stream(seat.stream) if seat.stream else contextlib.nullcontext()
        try:
            if self._stopped:  # Ctrl-C came while this run waited to start
                raise KeyboardInterrupt
            with stream:
                yield
        finally:
            self._leave(seat)

    def _leave(self, seat: _Seat) -> None:
        _local.seat = None
        with self._changed:
            self._order.remove(seat)
            self._changed.notify_all()

    def _hand_over(self, seat: _Seat) -> bool:
        seat.save()
        with self._changed:
            alone = len(self._order) == 1
            self._order.rotate(-1)
            self._changed.notify_all()
            self._changed.wait_for(lambda: self._order[0] is seat)
            stopped = self._stopped
        seat.restore()
        if stopped:
            raise KeyboardInterrupt
        return not alone


def turn() -> bool:
    """Let the other packed runs take a step; whether any did (a no-op for a run that is
    not packed)."""
    current = getattr(_local, "seat", None)
    if current is None:
        return False
    turns, seat = current
    return turns._hand_over(seat)


def lock_exclusively(handle: IO[str]) -> None:
    """``flock`` that a packed run waits for by taking turns, so that the run holding the
    lock (e.g. training a shared backbone in the same rotation) can finish."""
    if getattr(_local, "seat", None) is None:
        fcntl.flock(handle, fcntl.LOCK_EX)
        return
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if not turn():  # held by another process: wait without spinning
                time.sleep(0.05)
