import os
import signal
from pathlib import Path

import pytest
import torch

SHARED_CIFAR10 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


@pytest.fixture
def cifar10_shards() -> Path:
    """The real CIFAR-10 shards of a developer checkout; the test skips without them."""
    if not (SHARED_CIFAR10 / "cifar10-test.npz").exists():
        pytest.skip("real CIFAR-10 shards (../shared/data/cifar10) are not here")
    return SHARED_CIFAR10


@pytest.fixture
def signal_handlers_restored():
    """A test that installs SIGINT/SIGTERM handlers leaves the test process as it was."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for each, handler in handlers.items():
        signal.signal(each, handler)


def pytest_configure(config: pytest.Config) -> None:
    """In an xdist worker: one thread, and the processes tests start inherit it, so that
    workers (one per core) do not compete for the cores."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)
