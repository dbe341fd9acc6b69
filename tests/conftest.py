from pathlib import Path

import pytest

SHARED_CIFAR10 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


@pytest.fixture
def cifar10_shards() -> Path:
    """The real CIFAR-10 shards of a developer checkout; the test skips without them."""
    if not (SHARED_CIFAR10 / "cifar10-test.npz").exists():
        pytest.skip("real CIFAR-10 shards (../shared/data/cifar10) are not here")
    return SHARED_CIFAR10
