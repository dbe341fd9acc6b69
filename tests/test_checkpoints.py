"""Anyone's trained weights (``--init FILE``, ``--teacher FILE``) and the normalisation
they were trained with (``--normalize``), through run, load and export."""

import json
import pickle
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from clitools import compress_cli

from compress import create_model
from compress.checkpoints import load_foreign, match_state, read_checkpoint
from compress.data import DataConfig, parse_normalization
from compress.errors import UsageError
from compress.significance import decode_answers, interval, mcnemar

SHARED_MODELS = Path(__file__).resolve().parents[2] / "shared" / "models" / "cifar10-resnet"
RESNET20 = SHARED_MODELS / "resnet20-12fca82f.th"


def published(state: dict) -> OrderedDict:
    """``state`` as akamaster's files have it: DataParallel names, ``linear`` for the
    classifier, no ``num_batches_tracked`` (saved before PyTorch 0.4.1)."""
    return OrderedDict(
        ("module." + name.replace("fc.", "linear."), tensor)
        for name, tensor in state.items()
        if not name.endswith("num_batches_tracked")
    )


@pytest.fixture
def trained() -> torch.nn.Module:
    torch.manual_seed(1)
    model = create_model("resnet20")
    for module in model.modules():  # statistics unlike a fresh network's
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2)
    return model.eval()


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model", "net", "model_state_dict"])
def test_a_published_checkpoint_loads_whatever_its_wrapper_and_names(tmp_path, trained, wrapper):
    state = published(trained.state_dict())
    payload = state if wrapper is None else {wrapper: state, "best_prec1": 91.78, "epoch": 200}
    path = tmp_path / "weights.th"
    torch.save(payload, path, _use_new_zipfile_serialization=wrapper is None)
    torch.manual_seed(2)
    fresh = create_model("resnet20").eval()
    record = load_foreign(fresh, path)
    example = torch.randn(4, 3, 32, 32)
    assert torch.equal(fresh(example), trained(example))
    assert record["renamed"] == {"fc.weight": "linear.weight", "fc.bias": "linear.bias"}
    assert record["tensors"] == len(fresh.state_dict())
    assert record["kept_own"] == 19  # one num_batches_tracked per BatchNorm
    assert "114 by name, 2 in order by shape (linear.weight -> fc.weight" in record["match"]


def test_tensors_named_otherwise_are_paired_in_order_when_their_shapes_follow(trained):
    renamed = OrderedDict((f"t{i}", v) for i, v in enumerate(trained.state_dict().values()))
    match = match_state(create_model("resnet20"), renamed, "f")
    assert len(match.renamed) == len(renamed) and match.renamed["fc.bias"] == "t115"


def test_a_shape_found_once_on_each_side_decides_an_order_that_differs(trained):
    state = OrderedDict(trained.state_dict())
    bias = state.pop("fc.bias")
    weight = state.pop("fc.weight")
    state["head.b"], state["head.w"] = bias, weight  # listed bias first
    match = match_state(create_model("resnet20"), state, "f")
    assert match.renamed == {"fc.weight": "head.w", "fc.bias": "head.b"}


def test_same_shaped_tensors_out_of_order_are_a_guess(trained):
    items = [(f"p.{name}", tensor) for name, tensor in trained.state_dict().items()]
    items[0], items[1] = items[1], items[0]  # bn1.weight (16,) before conv1.weight
    with pytest.raises(UsageError, match="would be a guess"):
        match_state(create_model("resnet20"), OrderedDict(items), "f")


class RunsCode:
    """A pickle that would create a file when unpickled, if it were ever unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("damage", ["truncated", "pickle", "not_torch", "no_state", "resnet56"])
def test_a_file_that_is_not_this_networks_weights_ends_in_one_line(tmp_path, trained, damage):
    path = tmp_path / "bad.pt"
    marker = tmp_path / "code-ran"
    if damage == "truncated":
        torch.save(trained.state_dict(), path)
        path.write_bytes(path.read_bytes()[:5000])
    elif damage == "pickle":
        path.write_bytes(pickle.dumps({"state_dict": RunsCode(marker)}, protocol=2))
    elif damage == "not_torch":
        path.write_text("weights, honest")
    elif damage == "no_state":
        torch.save({"epoch": 3, "arch": "resnet20"}, path)
    else:
        torch.save(create_model("resnet56").state_dict(), path)
    result = compress_cli(
        "run", "baseline", "--model", "resnet20", "--init", path, "--epochs", "0",
        "--dataset", "synthetic", "--out", tmp_path / "runs",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    expected = {
        "truncated": "cannot read checkpoint",
        "pickle": "was not loaded: it is not a file of tensors alone",
        "not_torch": "was not loaded",
        "no_state": "holds no state dict",
        "resnet56": "does not fit this network",
    }[damage]
    assert expected in result.stderr
    assert not marker.exists()
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_read_checkpoint_drops_module_prefix_only_when_every_name_has_it(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"model": {"module.a": torch.ones(1), "b": torch.zeros(1)}}, path)
    assert set(read_checkpoint(path)) == {"module.a", "b"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dataset", None),
        ("imagenet", ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))),
        ("0.5,0.5,0.5/0.25,0.25,0.25", ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))),
    ],
)
def test_normalize_names_or_spells_out_mean_and_std(text, expected):
    assert parse_normalization(text) == expected


@pytest.mark.parametrize("text", ["cifar", "0.5,0.5/1,1", "0.5,0.5,0.5/1,0,1", "a,b,c/1,1,1"])
def test_a_bad_normalize_is_refused(text):
    with pytest.raises(UsageError, match="--normalize"):
        DataConfig(normalize=text)


def test_normalize_changes_what_the_network_is_fed_and_is_recorded(tmp_path):
    result = compress_cli(
        "run", "baseline", "--model", "resnet20", "--dataset", "synthetic", "--epochs", "1",
        "--batch-size", "64", "--input-size", "16", "--precise-bn", "64",
        "--normalize", "0.5,0.5,0.5/0.25,0.25,0.25", "--out", tmp_path, "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    run_dir = Path(json.loads(result.stdout)["run_dir"])
    config = json.loads((run_dir / "config.json").read_text())
    assert config["input"]["mean"] == [0.5, 0.5, 0.5]
    assert config["input"]["std"] == [0.25, 0.25, 0.25]


def test_wilson_interval_and_mcnemar_exact_p():
    published = interval(9173, 10000)
    assert published.text() == "91.73% [91.17, 92.25]"
    import numpy as np

    first = np.array([True] * 9 + [False] + [True] * 5)
    second = np.array([False] * 9 + [True] + [True] * 5)
    test = mcnemar(first, second)
    assert (test.only_first, test.only_second) == (9, 1)
    assert test.p_value == pytest.approx(2 * 11 / 1024)  # 2 P(X <= 1), X ~ Bin(10, 1/2)
    assert test.significant


@pytest.fixture
def shared_resnet20() -> Path:
    if not RESNET20.exists():
        pytest.skip("the published ResNet-20 (../shared/models/cifar10-resnet) is not here")
    return RESNET20


def test_the_published_resnet20_classifies_its_published_share_through_run_and_export(
    tmp_path, shared_resnet20, cifar10_shards
):
    """91.73% on all 10,000 images (bench/trained.sh checks that); here the first 1,000,
    of which the README of the weights says 912 are classified right, with ImageNet's
    normalisation, and 908 with CIFAR-10's own."""
    common = (
        "run", "baseline", "--model", "resnet20", "--init", shared_resnet20, "--epochs", "0",
        "--dataset", "cifar10", "--data-dir", cifar10_shards, "--test-size", "1000",
        "--train-size", "256", "--out", tmp_path, "--json",
    )  # fmt: skip
    result = compress_cli(*common, "--normalize", "imagenet")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["final_val_acc"] == 0.912
    answers = decode_answers(record["test_correct"])
    assert answers.shape == (1000,) and answers.sum() == 912
    run_dir = Path(record["run_dir"])
    exported = compress_cli("export", run_dir, "--repeats", "0")
    assert exported.returncode == 0, exported.stderr
    check = json.loads((run_dir / "metrics.json").read_text())["exports"]["onnx"]
    assert check["torch_top1"] == check["ort_top1"] == 0.912  # the recorded normalisation
    own = compress_cli(*common)
    # 907 with CIFAR-10's published statistics (the README of the weights, with shard 0's: 908)
    assert json.loads(own.stdout)["final_val_acc"] == 0.907
