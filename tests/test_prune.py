import copy
import json
import warnings

import pytest
import torch
from clitools import compress_cli
from rich.console import Console
from safetensors.torch import load_file
from torch import nn

from compress.data import make_synthetic
from compress.engine import TrainConfig
from compress.errors import UsageError
from compress.measure import count_macs
from compress.registry import create_model
from compress.reports import run_table, si
from compress.runner import run
from compress.structure import fit_to_state_dict
from compress.techniques import RunContext
from compress.techniques.prune import PruneConfig, _pruner, prunable_fraction, ratio_for_target
from ghost.ghostify import ghostify
from ghost.module import GhostModule
from ghost.pruning import GhostModulePruner

warnings.filterwarnings("ignore", module="torch_pruning")


def test_pruning_one_intrinsic_map_removes_it_and_its_ghosts_exactly():
    torch.manual_seed(0)
    module = GhostModule(5, 12, kernel_size=3, ratio=3, dw_size=3).eval()
    x = torch.randn(2, 5, 8, 8)
    before = module(x)
    maps = 4
    GhostModulePruner().prune_out_channels(module, [1, 1 + maps, 1 + 2 * maps])
    kept = [c for c in range(12) if c % maps != 1]
    torch.testing.assert_close(module(x), before[:, kept])
    assert module.out_channels == 9 and module.cheap_operation[0].groups == 3
    with pytest.raises(ValueError, match="one intrinsic map at a time"):
        GhostModulePruner().prune_out_channels(module, [0])


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("vgg16", 32),
        ("ghost_vgg16", 32),
        ("resnet56", 32),
        ("mobilenetv3_large", 224),
        ("ghostnet", 224),
    ],
)
def test_target_macs_land_near_the_target(name, size):
    model = create_model(name, num_classes=10).eval()
    example = torch.zeros(1, 3, size, size)
    base = count_macs(model, example)
    config = PruneConfig(target_macs=0.5)
    _pruner(model, config, ratio_for_target(model, config, example), example).step()
    assert abs(count_macs(model, example) / base - 0.5) < 0.015
    assert model(example).shape == (1, 10)


def test_ghostnet_is_pruned_throughout_and_ghost_modules_stay_consistent():
    model = create_model("ghostnet", num_classes=10).eval()
    example = torch.zeros(1, 3, 224, 224)
    ghosts = [m for m in model.modules() if isinstance(m, GhostModule)]
    widths = [m.out_channels for m in ghosts]
    _pruner(model, PruneConfig(ratio=0.5), 0.5, example).step()
    # torch-pruning alone takes it only from 140M to 117M MACs; whole maps go here.
    assert count_macs(model, example) < 50e6
    for module in ghosts:
        maps = module.primary_conv[0].out_channels
        assert module.out_channels == 2 * maps == 2 * module.cheap_operation[0].out_channels
    halved = [m.out_channels == w // 2 for m, w in zip(ghosts, widths, strict=True)]
    # All but the first block's output, which the protected stem feeds through a residual.
    assert halved.count(False) == 1 and not halved[1]


@pytest.mark.parametrize(
    ("importance", "scope"),
    [
        ("l1", "global"),
        ("l2", "layer"),
        ("bn_scale", "layer"),
        ("taylor", "layer"),
        ("random", "layer"),
    ],
)
def test_every_importance_prunes_channels(importance, scope):
    from rich.console import Console

    from compress.data import make_synthetic
    from compress.engine import TrainConfig
    from compress.techniques import RunContext
    from compress.techniques.prune import Prune

    context = RunContext(make_synthetic(128, 32), TrainConfig(device="cpu"), Console(quiet=True))
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=4)
    example = torch.zeros(1, 3, 32, 32)
    before = count_macs(model.eval(), example)
    config = PruneConfig(
        ratio=0.5, importance=importance, scope=scope, steps=2, finetune_epochs=0, round_to=2
    )
    pruned = Prune().post_train(model, config, context)
    assert count_macs(pruned.eval(), example) < 0.8 * before
    inner = [
        block.conv1.out_channels
        for stage in (pruned.layer1, pruned.layer2, pruned.layer3)
        for block in stage
    ]
    assert all(width % 2 == 0 for width in inner)  # round_to
    assert pruned(example).shape == (1, 4)


def test_layer_and_global_weight_masking_reach_the_sparsity(tmp_path):
    from compress.techniques.prune import Prune

    context = RunContext(make_synthetic(64, 16), TrainConfig(device="cpu"), Console(quiet=True))

    for scope in ("layer", "global"):
        model = create_model("resnet20")
        config = PruneConfig(method="weights", ratio=0.7, scope=scope, finetune_epochs=0)
        Prune()._mask(model, config, context)
        layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert not any(hasattr(m, "weight_orig") for m in layers)  # made permanent
        zeros = sum(int((m.weight == 0).sum()) for m in layers)
        total = sum(m.weight.numel() for m in layers)
        assert zeros / total == pytest.approx(0.7, abs=0.001)
        if scope == "layer":
            for m in layers:
                assert (m.weight == 0).float().mean().item() == pytest.approx(0.7, abs=0.02)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ratio": 1.0}, "--ratio must be <= 0.99"),
        ({"ratio": -0.1}, "--ratio must be >= 0"),
        ({"method": "weights", "importance": "taylor"}, "l1 or random only"),
        ({"target_macs": 1.5}, "--target-macs must be < 1"),
        ({"method": "weights", "target_macs": 0.5}, "channel pruning only"),
    ],
)
def test_bad_prune_options(options, message):
    with pytest.raises(UsageError, match=message):
        PruneConfig(**options)


@pytest.mark.parametrize(
    ("method", "kind"), [("channels", "channels removed"), ("weights", "weights masked")]
)
def test_prune_end_to_end_labels_and_reload(tmp_path, method, kind):
    result = compress_cli(
        "run",
        "prune",
        "--model",
        "resnet20",
        "--method",
        method,
        "--ratio",
        "0.5",
        "--dataset",
        "synthetic",
        "--train-size",
        "256",
        "--epochs",
        "3",
        "--batch-size",
        "64",
        "--finetune-epochs",
        "1",
        "--input-size",
        "16",
        "--json",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["prune_kind"] == kind and metrics["final_val_acc"] > 0.4  # chance: 0.25
    if method == "channels":
        assert metrics["macs"] < 0.6 * metrics["unpruned_macs"]
        assert metrics["params"] < metrics["unpruned_params"]
    else:
        assert metrics["macs"] == metrics["unpruned_macs"]
        assert metrics["params"] == metrics["unpruned_params"]
        assert metrics["nonzero_macs_est"] < 0.6 * metrics["macs"]
    state = load_file(f"{tmp_path / metrics['run_dir']}/model.safetensors")
    model = fit_to_state_dict(create_model("resnet20", num_classes=4), state).eval()
    assert count_macs(model, torch.zeros(1, 3, 16, 16)) == metrics["macs"]


EXAMPLE = torch.zeros(1, 3, 16, 16)


def ghost_resnet20(s: int) -> nn.Module:
    model = create_model("resnet20")
    ghostify(model, s, 3)
    return model.eval()


@pytest.mark.parametrize(
    ("network", "scope"),
    [("resnet20", "layer"), ("ghost-s4", "layer"), ("resnet20", "global")],
)
def test_more_ratio_never_keeps_more_macs(network, scope):
    """The audit's cases: torch-pruning skips a layer it would empty, so ResNet-20 kept
    9.3% of its MACs at ratio 0.9 and 38.5% at 0.95, and Ghost-ResNet-20 (s = 4) all of
    them at 0.95. With a floor of one channel (one intrinsic map) per layer the MACs
    kept fall with the ratio, down to the floor."""
    base = create_model("resnet20").eval() if network == "resnet20" else ghost_resnet20(4)
    example = torch.zeros(1, 3, 16, 16)
    macs = count_macs(base, example)
    kept = []
    for ratio in (0.5, 0.7, 0.887, 0.9, 0.95, 0.99):
        model = copy.deepcopy(base)
        _pruner(model, PruneConfig(ratio=ratio, scope=scope), ratio, example).step()
        kept.append(count_macs(model.eval(), example) / macs)
    assert kept == sorted(kept, reverse=True), kept
    assert kept[-1] < 0.25  # the floor: every prunable layer down to one channel


@pytest.mark.parametrize(("s", "target"), [(4, 0.5), (4, 0.3), (2, 0.3)])
def test_targets_the_audit_found_refused_are_within_reach(s, target):
    """Refused before ("at most 26.8% of the MACs can go"), though reachable."""
    assert prunable_fraction(ghost_resnet20(s), PruneConfig(target_macs=target), EXAMPLE) < target


def test_a_target_the_audit_found_refused_is_reached():
    """Ghost-ResNet-20 at s = 4 to half its MACs: ratio 0.495 reached 54.4%, the nearest
    point (4 intrinsic maps in stage 1 move the MACs in steps of about 4 points)."""
    model = ghost_resnet20(4)
    config = PruneConfig(target_macs=0.5)
    _pruner(model, config, ratio_for_target(model, config, EXAMPLE), EXAMPLE).step()
    reached = count_macs(model.eval(), EXAMPLE) / count_macs(ghost_resnet20(4), EXAMPLE)
    assert abs(reached - 0.5) < 0.05


@pytest.mark.parametrize(
    ("model", "options", "message"),
    [
        ("ghost_vgg16", {"s": 3, "ratio": 0.5}, "s=3 does not divide their widths"),
        ("ghost_vgg16", {"s": 5, "ratio": 0.5}, "s=5 does not divide their widths"),
        ("ghost_resnet56", {"s": 3, "target_macs": 0.5}, "cannot reach --target-macs 0.5"),
    ],
)
def test_ghost_models_that_cannot_lose_whole_maps_are_refused_before_training(
    tmp_path, model, options, message
):
    with pytest.raises(UsageError, match=message):
        run("ghost+prune", tmp_path, model=model, dataset="synthetic", epochs=1, **options)
    assert not list(tmp_path.iterdir())  # refused before the run directory exists


def test_a_pruned_run_reports_the_pruned_network_and_its_fine_tuning(tmp_path):
    metrics = run(
        "prune",
        tmp_path,
        console=Console(quiet=True),
        model="resnet20",
        target_macs=0.5,
        finetune_epochs=2,
        dataset="synthetic",
        train_size=256,
        epochs=2,
        batch_size=64,
        input_size=16,
    ).metrics
    history = metrics["history"]
    assert [(r["epoch"], r["phase"]) for r in history] == [
        (1, "train"),
        (2, "train"),
        (3, "finetune"),
        (4, "finetune"),
    ]
    finetuned = [r["val_acc"] for r in history[2:]]
    # Best and final describe the pruned network; the trained one keeps its own keys.
    assert metrics["best_val_acc"] == max([*finetuned, metrics["final_val_acc"]])
    assert metrics["best_epoch"] in (3, 4, None)
    assert metrics["before_prune_val_acc"] == history[1]["val_acc"]
    assert metrics["target_macs"] == round(0.5 * metrics["unpruned_macs"])
    assert metrics["macs_fraction"] == metrics["macs"] / metrics["unpruned_macs"]
    assert abs(metrics["macs_fraction"] - 0.5) < 0.02
    table = Console(width=200, record=True)
    table.print(run_table([("run", metrics)]))
    lines = table.export_text().splitlines()
    (nonzero,) = [line for line in lines if "Non-zero MACs" in line]
    assert nonzero.split("│")[2].strip() == si(metrics["nonzero_macs_est"])  # a count, no "s"
    (kept,) = [line for line in lines if "MACs kept" in line]
    assert kept.split("│")[2].strip() == f"{100 * metrics['macs_fraction']:.1f}%"
