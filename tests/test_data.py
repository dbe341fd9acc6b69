import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from compress import data as data_module
from compress.data import DeviceLoader, load_dataset, make_synthetic
from compress.errors import UsageError


def test_digits_is_a_fixed_stratified_32px_rgb_split():
    digits = load_dataset("digits")
    assert digits.train_x.shape == (1437, 3, 32, 32) and digits.test_x.shape == (360, 3, 32, 32)
    assert digits.train_x.dtype == torch.uint8 and digits.num_classes == 10
    assert torch.equal(digits.train_x[:, 0], digits.train_x[:, 2])  # grey as RGB
    assert torch.bincount(digits.test_y).tolist() == [36, 36, 35, 37, 36, 37, 36, 36, 35, 36]
    assert torch.equal(load_dataset("digits").train_y, digits.train_y)
    assert not digits.mirror_invariant


def write_shards(directory, images_per_shard=6, shards=2):
    rng = np.random.default_rng(0)
    for index in range(shards):
        x = rng.integers(0, 256, (images_per_shard, 32, 32, 3), dtype=np.uint8)
        np.savez(directory / f"set-train-{index}.npz", x=x, y=np.arange(images_per_shard) % 10)
    x = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    np.savez(directory / "set-test.npz", x=x, y=np.arange(4, dtype=np.uint8))
    return x


def test_npz_shards_are_read_as_nchw_uint8(tmp_path):
    test_x = write_shards(tmp_path)
    loaded = load_dataset("cifar10", tmp_path)
    assert loaded.train_x.shape == (12, 3, 32, 32) and loaded.test_y.tolist() == [0, 1, 2, 3]
    assert torch.equal(loaded.test_x[1].permute(1, 2, 0), torch.from_numpy(test_x[1]))


def test_a_damaged_shard_is_a_usage_error(tmp_path):
    write_shards(tmp_path)
    (tmp_path / "set-test.npz").write_bytes(b"not a zip")
    with pytest.raises(UsageError, match="cannot read shard"):
        load_dataset("cifar10", tmp_path)


def truncated(path):
    path.write_bytes(path.read_bytes()[:200])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: truncated(d / "set-train-1.npz"), "cannot read shard .*set-train-1.npz"),
        (
            lambda d: np.savez(d / "set-train-0.npz", x=np.zeros((0, 32, 32, 3), np.uint8), y=[]),
            "set-train-0.npz holds no images",
        ),
        (
            lambda d: np.savez(
                d / "set-test.npz", x=np.zeros((4, 32, 32, 3), np.uint8), y=[0, 1, 11, 3]
            ),
            "test labels in .* go up to 11; cifar10 has 10 classes",
        ),
        (
            lambda d: np.savez(
                d / "set-test.npz", x=np.zeros((4, 32, 32, 3), np.uint8), y=[0, -1, 1, 3]
            ),
            "set-test.npz: labels must be >= 0, found -1",
        ),
        (
            lambda d: np.savez(
                d / "set-test.npz",
                x=np.zeros((4, 32, 32, 3), np.uint8),
                y=np.zeros((4, 2), np.uint8),
            ),
            "set-test.npz: y must hold one label per image",
        ),
        (
            lambda d: np.savez(
                d / "set-test.npz", x=np.zeros((4, 32, 32, 3), np.uint8), y=np.array([0.5, 1, 2, 3])
            ),
            "set-test.npz: labels must be integers, got float64",
        ),
        (
            lambda d: np.savez(
                d / "set-test.npz", x=np.zeros((4, 28, 28, 3), np.uint8), y=[0, 1, 2, 3]
            ),
            "set-test.npz holds 28px images, .*set-train-0.npz 32px",
        ),
        (lambda d: (d / "set-test.npz").unlink(), "none named \\*test\\*.npz"),
        (
            lambda d: np.savez(
                d / "set-test.npz", x=np.zeros((4, 32, 32, 1), np.uint8), y=[0, 1, 2, 3]
            ),
            "x must be uint8 images \\(N, H, W, 3\\)",
        ),
    ],
)
def test_every_shard_is_checked_up_front(tmp_path, damage, message):
    write_shards(tmp_path)
    damage(tmp_path)
    with pytest.raises(UsageError, match=message):
        load_dataset("cifar10", tmp_path)


def test_a_data_dir_that_is_a_file_says_so(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is a file, not a directory"):
        load_dataset("cifar10", tmp_path / "file")


class FakeCIFAR10:
    """torchvision's CIFAR10 as far as the loader uses it, without the internet."""

    calls = 0

    def __init__(self, root, train, download):
        FakeCIFAR10.calls += 1
        count = 10 if train else 5
        self.data = np.full((count, 32, 32, 3), 7 if train else 9, dtype=np.uint8)
        self.targets = list(range(count))


def test_torchvision_download_is_decoded_once_into_a_uint8_cache(tmp_path, monkeypatch):
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    FakeCIFAR10.calls = 0
    first = load_dataset("cifar10", tmp_path)
    assert (tmp_path / "cifar10-uint8.npz").exists() and FakeCIFAR10.calls == 2
    second = load_dataset("cifar10", tmp_path)
    assert FakeCIFAR10.calls == 2  # the cache answered
    assert torch.equal(first.train_x, second.train_x) and int(second.test_x[0, 0, 0, 0]) == 9
    (tmp_path / "cifar10-uint8.npz").write_bytes(b"garbage")
    with pytest.raises(UsageError, match="corrupted data cache"):
        load_dataset("cifar10", tmp_path)


def test_offline_without_data_says_what_to_pass(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(UsageError, match="use --dataset digits"):
        load_dataset("cifar10", tmp_path)
    assert not list(tmp_path.iterdir())


def test_unknown_dataset():
    with pytest.raises(UsageError, match="unknown dataset 'mnist'"):
        load_dataset("mnist")


def test_real_cifar10_shards_are_bit_exact(cifar10_shards):
    cifar = load_dataset("cifar10", cifar10_shards)
    assert cifar.train_x.shape == (50000, 3, 32, 32) and cifar.test_x.shape == (10000, 3, 32, 32)
    first_shard = cifar.train_x[:10000].permute(0, 2, 3, 1).contiguous().numpy()
    digest = hashlib.sha256(first_shard.tobytes()).hexdigest()
    assert digest == "c04d3fb8b61d2099d8a5c95b96ab345a3001aafb11eecbb45e010c9fb1ea9ff9"
    assert torch.bincount(cifar.test_y).tolist() == [1000] * 10


def loader(images, batch_size=4, **augment):
    labels = torch.arange(len(images))
    generator = torch.Generator().manual_seed(0)
    return DeviceLoader(images, labels, batch_size, torch.device("cpu"), True, generator, **augment)


def test_training_batches_are_fixed_size_and_a_fresh_permutation_each_epoch():
    images = torch.zeros(10, 3, 8, 8, dtype=torch.uint8)
    batches = loader(images, crop_padding=0, flip=False)
    assert len(batches) == 2
    first = torch.cat([labels for _, labels in batches])
    second = torch.cat([labels for _, labels in batches])
    assert len(first) == 8 and len(set(first.tolist())) == 8
    assert not torch.equal(first, second)


def test_crop_is_a_window_of_the_zero_padded_image():
    images = torch.randint(1, 256, (8, 3, 8, 8), dtype=torch.uint8)
    batches = loader(images, crop_padding=2, flip=False)
    for out, labels in batches:
        for crop, label in zip(out, labels, strict=True):
            padded = F.pad(images[label], (2, 2, 2, 2))
            windows = [padded[:, y : y + 8, x : x + 8] for y in range(5) for x in range(5)]
            assert any(torch.equal(crop, window) for window in windows)


def test_flip_and_cutout():
    images = torch.randint(1, 256, (64, 3, 8, 8), dtype=torch.uint8)
    out, labels = next(iter(loader(images, batch_size=64, crop_padding=0, flip=True)))
    flipped = [torch.equal(o, images[lab].flip(2)) for o, lab in zip(out, labels, strict=True)]
    kept = [torch.equal(o, images[lab]) for o, lab in zip(out, labels, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and 10 < sum(flipped) < 54
    holes = loader(images, batch_size=64, crop_padding=0, flip=False, cutout=3)
    out, _ = next(iter(holes))
    zeros = (out == 0).all(1).sum((1, 2))
    assert ((zeros >= 4) & (zeros <= 9)).all()  # a 3x3 square, clipped at the border


def test_batch_larger_than_the_data_is_refused():
    with pytest.raises(UsageError, match="larger than the 10 training images"):
        DeviceLoader(
            torch.zeros(10, 3, 8, 8, dtype=torch.uint8),
            torch.zeros(10),
            16,
            torch.device("cpu"),
            True,
        )


def test_synthetic_is_deterministic_and_balanced_enough():
    a, b = make_synthetic(), make_synthetic()
    assert torch.equal(a.train_x, b.train_x) and a.num_classes == 4
    assert torch.bincount(a.train_y).min() > 90


def test_default_data_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("COMPRESS_DATA", str(tmp_path))
    assert data_module.default_data_dir() == tmp_path
