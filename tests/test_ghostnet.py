import pytest
import timm
import torch

from compress.measure import count_macs, count_params
from ghost.ghostnet import ghostnet

PAPER_MACS = {0.5: 42e6, 1.0: 141e6, 1.3: 226e6}


@pytest.mark.parametrize(
    ("width", "timm_name", "params", "macs"),
    [
        (0.5, "ghostnet_050", 2_587_292, 42_328_152),
        (1.0, "ghostnet_100", 5_182_508, 141_150_512),
        (1.3, "ghostnet_130", 7_358_820, 227_003_256),
    ],
)
def test_ghostnet_is_timms_and_the_papers(width, timm_name, params, macs):
    reference = timm.create_model(timm_name, pretrained=False).eval()
    model = ghostnet(width=width).eval()
    assert count_params(model)[0] == count_params(reference)[0] == params
    # Same layers under the same names: timm's weights load strictly and agree exactly.
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=1e-5)
    measured = count_macs(model, x[:1])
    assert measured == macs
    assert abs(measured - PAPER_MACS[width]) / PAPER_MACS[width] < 0.01


def test_cifar_option_keeps_a_4x4_map_and_changes_only_strides():
    model = ghostnet(num_classes=10, cifar=True).eval()
    features = model.blocks(model.act1(model.bn1(model.conv_stem(torch.randn(1, 3, 32, 32)))))
    assert features.shape[-2:] == (4, 4)
    # The block made stride 1 loses its stride-2 depthwise conv + BN: 48 * 9 + 2 * 48.
    assert count_params(ghostnet(num_classes=10))[0] - count_params(model)[0] == 528
    assert count_macs(model, torch.randn(1, 3, 32, 32)) == 42_680_384


def test_other_ratios_and_kernels_build_and_shrink():
    base = count_macs(ghostnet(), torch.randn(1, 3, 224, 224))
    assert count_macs(ghostnet(s=4, d=1), torch.randn(1, 3, 224, 224)) < base
    # With 1x1 primary convs a 5x5 cheap op costs more than the ghosts save.
    assert count_macs(ghostnet(s=3, d=5), torch.randn(1, 3, 224, 224)) > base
    with pytest.raises(ValueError, match="width"):
        ghostnet(width=0)
