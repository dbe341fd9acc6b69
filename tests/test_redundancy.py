"""``compress ghost maps|fit|theory``: redundancy found where it was built in, exact fits."""

import huggingface_hub.constants
import pytest
import torch
import torch.nn.functional as F
from clitools import compress_cli
from torch import nn

from compress import registry
from compress.errors import UsageError
from compress.ratios import conv_vs_ghost
from compress.redundancy import (
    feature_maps,
    fit_cheap_operation,
    most_similar_pairs,
    redundancy,
)
from compress.runner import run


def test_a_layer_with_duplicated_channels_is_fully_redundant():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, padding=1)
    twin = nn.Conv2d(3, 16, 3, padding=1)
    with torch.no_grad():  # channel 8 + i is channel i, scaled: cosine exactly 1
        twin.weight.copy_(torch.cat([conv.weight, 2 * conv.weight]))
        twin.bias.copy_(torch.cat([conv.bias, 2 * conv.bias]))
    model = nn.Sequential(twin, nn.Identity())
    maps = feature_maps(model, "0", torch.randn(1, 3, 12, 12))
    found = redundancy(maps, threshold=0.999)
    assert found.channels == 16 and found.dead == 0
    assert found.share_maps_with_ghost == 1.0
    assert found.share_pairs_above == pytest.approx(8 / (16 * 15 / 2))
    pairs = most_similar_pairs(maps, 8)
    assert sorted((i, j) for i, j, _ in pairs) == [(i, i + 8) for i in range(8)]
    assert all(similarity == pytest.approx(1.0, abs=1e-5) for *_, similarity in pairs)


def test_independent_maps_have_no_ghosts_and_dead_maps_are_left_out():
    torch.manual_seed(0)
    maps = torch.randn(10, 16, 16)
    maps[3] = 0
    found = redundancy(maps, threshold=0.9)
    assert (found.channels, found.dead) == (10, 1)
    assert found.share_maps_with_ghost == 0.0 and found.share_pairs_above == 0.0
    assert len(found.pair_similarities) == 9 * 8 // 2
    assert sum(count for *_, count in found.histogram()) == 36


def test_an_exactly_depthwise_related_pair_fits_with_zero_error():
    torch.manual_seed(0)
    source = torch.randn(24, 24)
    kernel = torch.randn(3, 3)
    target = F.conv2d(source[None, None], kernel[None, None], padding=1)[0, 0] + 0.5
    scale = float(target.std())
    fit = fit_cheap_operation(source, target, 3)
    assert fit.mse < 1e-10  # float32 rounding of the target
    assert torch.allclose(fit.kernel, kernel, atol=1e-5)
    assert fit.bias == pytest.approx(0.5 / scale, abs=1e-6)
    assert fit_cheap_operation(source, target, 7).mse < 1e-10  # 7x7 holds the 3x3
    assert fit_cheap_operation(source, target, 1).mse > 1e-2  # a scale alone cannot


def test_theory_matches_a_measured_ghost_module_exactly():
    ratio = conv_vs_ghost(64, 128, 3, 2, 3, (32, 32))
    # conv: 64*128*9 weights; Ghost: 64*64*9 primary + 64*9 cheap
    assert ratio.param_ratio == pytest.approx(73_728 / 37_440)
    assert ratio.mac_ratio == pytest.approx(73_728 / 37_440)
    assert ratio.theory == pytest.approx(576 / (288 + 4.5))
    assert ratio.output_hw == (32, 32)


def test_pretrained_weights_offline_say_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(registry, "_hub_reachable", lambda: False)
    with pytest.raises(UsageError, match="offline, pass a run directory made by `compress run`"):
        registry.pretrained_model("resnet18")
    with pytest.raises(UsageError, match="neither a run directory nor a timm model"):
        registry.pretrained_model("resnet_nope")


def test_pretrained_weights_online_use_the_models_own_preprocessing(monkeypatch):
    import timm

    from compress.cli.analysis import load_subject

    real = timm.create_model
    asked = {}

    def fake(name, pretrained=False, **kwargs):  # the hub is out of reach here
        asked[name] = pretrained
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", fake)
    monkeypatch.setattr(registry, "_hub_reachable", lambda: True)
    model, image, label = load_subject("timm:resnet18", None)
    assert asked == {"resnet18": True} and label == "timm:resnet18"
    assert image.shape == (1, 3, 224, 224)
    assert abs(float(image.mean())) < 1.5  # normalised with ImageNet statistics
    assert not model.training


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    options = {"dataset": "synthetic", "train_size": 128, "epochs": 1, "input_size": 16}
    outcome = run("baseline", out, model="resnet20", batch_size=64, **options)
    return outcome.run_dir


def test_maps_and_fit_from_a_run_directory(trained_run, tmp_path):
    maps = compress_cli("ghost", "maps", "--model", str(trained_run), "--out", "maps", cwd=tmp_path)
    assert maps.returncode == 0, maps.stderr
    words = " ".join(maps.stdout.split())  # rich wraps the title to the terminal's width
    assert ", layer layer1" in words and "maps with such a ghost" in words
    assert "boxed pair: maps" in maps.stdout
    (png,) = (tmp_path / "maps").glob("maps-*-layer1.png")
    assert png.read_bytes()[:4] == b"\x89PNG"

    fit = compress_cli(
        "ghost", "fit", "--model", str(trained_run), "--pairs", "2", "--d", "1,3", cwd=tmp_path
    )
    assert fit.returncode == 0, fit.stderr
    rows = [line for line in fit.stdout.splitlines() if line.startswith("│")]
    assert len(rows) == 3 and rows[-1].split("│")[1].strip() == "mean"
    mse_d1, mse_d3 = (float(cell) for cell in rows[-1].split("│")[4:6])
    assert mse_d3 <= mse_d1  # a 3x3 filter can do all a 1x1 can


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["maps", "--layer", "nope"], "no layer 'nope'"),
        (["maps", "--image", "missing.png"], "cannot read image missing.png"),
        (["fit", "--d", "2"], "d must be"),
    ],
)
def test_bad_ghost_input(trained_run, tmp_path, args, message):
    command, *rest = args
    result = compress_cli("ghost", command, "--model", str(trained_run), *rest, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_theory_input(tmp_path):
    result = compress_cli("ghost", "theory", "--s", "1", cwd=tmp_path)
    assert result.returncode == 2 and "s must be" in result.stderr
