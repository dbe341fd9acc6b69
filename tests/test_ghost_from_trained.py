"""Ghost modules fitted to a trained network (``ghost/from_trained.py``)."""

import json

import pytest
import torch
from clitools import QUICK_SYNTHETIC
from torch import nn

from compress import create_model, load
from compress.errors import UsageError
from compress.runner import run
from ghost.from_trained import ghostify_trained
from ghost.module import GhostModule


def redundant_net(s: int) -> nn.Sequential:
    """A stem, then a conv + BN unit whose maps are, beyond the first ``m``, exact linear
    copies of others (what a Ghost module can make exactly, with no ReLU between), in a
    shuffled order, read by a plain conv without BN (which stays a conv)."""
    torch.manual_seed(0)
    maps, out = 3, 3 * s
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, out, 3, padding=1, bias=False),
        nn.BatchNorm2d(out),
        nn.Conv2d(out, 5, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    base = torch.randn(maps, 8, 3, 3)
    copies = [base[i % maps] * (1.5 + i) * (-1) ** i for i in range(out - maps)]
    filters = torch.cat([base, torch.stack(copies)])
    order = torch.randperm(out)
    with torch.no_grad():
        net[3].weight.copy_(filters[order])
        net[4].running_var.fill_(1.0)
        net[4].running_mean.zero_()
    return net.eval()


def test_maps_that_are_copies_of_others_are_rebuilt_exactly_in_a_new_order():
    net = redundant_net(s=3)
    images = torch.randn(64, 3, 12, 12)
    expected = net(images)
    report = ghostify_trained(net, images.split(32), s=3, d=3)
    assert [u.name for u in report.units] == ["3"]
    assert report.units[0].reordered  # the plain conv that reads it was reordered to match
    assert report.relative_error < 1e-6
    assert isinstance(net[3], GhostModule)
    torch.testing.assert_close(net(images), expected, rtol=1e-4, atol=1e-4)


def test_a_unit_whose_readers_cannot_follow_keeps_its_order_and_still_fits():
    """A map read by a residual sum elsewhere: the permutation check fails, the layout's
    order is kept and every ghost is fitted from the map the layout gives it."""

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, padding=1, bias=False)
            self.stem_bn = nn.BatchNorm2d(4)
            self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(4)
            self.head = nn.Conv2d(4, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.stem_bn(self.stem(x))
            return self.head(x + self.bn(self.conv(x))).mean((2, 3))

    torch.manual_seed(1)
    net = Residual().eval()
    images = torch.randn(32, 3, 8, 8)
    report = ghostify_trained(net, [images], s=2, d=3)
    (unit,) = report.units
    assert unit.name == "conv" and unit.intrinsic == 2
    assert 0 <= unit.relative_error <= 1
    assert isinstance(net.conv, GhostModule)
    assert net(images).shape == (32, 2)


def test_refitting_layer_by_layer_keeps_errors_from_compounding():
    """Three conv units in a row, no map a copy of another: fitted on the trained maps
    alone, each layer's error feeds the next; refitted in forward order on the inputs
    the Ghost layers before it give, the network's output stays closer to the original.
    Each BatchNorm then holds the statistics of the maps it normalises."""

    def chain() -> nn.Sequential:
        torch.manual_seed(3)
        layers: list[nn.Module] = []
        for cin, cout in ((3, 8), (8, 8), (8, 8)):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)]
            layers.append(nn.ReLU())
        net = nn.Sequential(*layers, nn.Conv2d(8, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        with torch.no_grad():  # statistics of the maps each BN sees, as after training
            net.train()
            for _ in range(20):
                net(torch.randn(64, 3, 10, 10, generator=torch.Generator().manual_seed(9)))
        return net.eval()

    images = torch.randn(128, 3, 10, 10, generator=torch.Generator().manual_seed(9))
    expected = chain()(images).detach()
    errors = {}
    for reconstruct in (False, True):
        net = chain()
        report = ghostify_trained(net, images.split(64), s=2, d=3, reconstruct=reconstruct)
        assert [u.name for u in report.units] == ["3", "6"]  # the first conv is kept
        errors[reconstruct] = float((net(images) - expected).detach().square().mean())
    assert errors[True] < 0.7 * errors[False]  # 0.0016 against 0.0026
    ghost = net[6]
    inputs = nn.Sequential(*net[:6])(images)
    made = ghost.primary_conv[0](inputs)
    torch.testing.assert_close(
        ghost.primary_conv[1].running_mean, made.mean((0, 2, 3)), rtol=1e-4, atol=1e-5
    )
    torch.testing.assert_close(
        ghost.primary_conv[1].running_var, made.var((0, 2, 3)), rtol=1e-3, atol=1e-5
    )


QUICK = QUICK_SYNTHETIC


def test_a_ghost_backbone_starts_from_its_plain_runs_weights_or_a_file_of_them(tmp_path):
    plain = run("baseline", tmp_path, model="resnet20", epochs=1, curves=False, **QUICK)
    weights = tmp_path / "resnet20.pt"
    torch.save({"net": load(plain.run_dir).state_dict()}, weights)
    for source in (plain.run_dir, weights):
        ghost = run(
            "ghost", tmp_path, backbone="resnet20", s=2, d=3, init=str(source), epochs=1,
            fit_images=64, curves=False, **QUICK,
        )  # fmt: skip
        config = json.loads((ghost.run_dir / "config.json").read_text())
        made = config["init_from"]["made_from_trained"]
        assert made["units"] == 18 and made["reordered_units"] == 9  # each block's inner conv
        assert made["fit_images"] == 64 and 0 < made["relative_error"] < 1
        assert 0 <= ghost.metrics["init_val_acc"] <= 1  # right after the fit, before a step
        assert ghost.metrics["ghost_modules"] == 18
        assert sum(isinstance(m, GhostModule) for m in load(ghost.run_dir).modules()) == 18


def test_a_ghost_backbone_refuses_weights_of_another_network(tmp_path):
    weights = tmp_path / "resnet56.pt"
    torch.save(create_model("resnet56").state_dict(), weights)
    with pytest.raises(UsageError, match="does not fit this network"):
        run("ghost", tmp_path / "runs", backbone="resnet20", init=str(weights), epochs=1, **QUICK)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
