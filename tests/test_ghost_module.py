import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compress.measure import count_macs, count_params
from ghost.module import GhostModule


@settings(max_examples=40, deadline=None)
@given(
    in_channels=st.integers(1, 24),
    out_channels=st.integers(1, 40),
    kernel=st.sampled_from([1, 3, 5]),
    s=st.integers(2, 5),
    d=st.sampled_from([1, 3, 5, 7]),
    stride=st.sampled_from([1, 2]),
)
def test_shape_params_and_macs_match_hand_arithmetic(
    in_channels, out_channels, kernel, s, d, stride
):
    module = GhostModule(in_channels, out_channels, kernel, s, d, stride).eval()
    x = torch.randn(1, in_channels, 12, 12)
    y = module(x)
    size = (12 + 2 * (kernel // 2) - kernel) // stride + 1
    assert y.shape == (1, out_channels, size, size)

    intrinsic = -(-out_channels // s)  # ceil(out / s)
    ghosts = intrinsic * (s - 1)
    conv_weights = in_channels * intrinsic * kernel**2 + ghosts * d**2
    bn_params = 2 * (intrinsic + ghosts)
    assert count_params(module)[0] == conv_weights + bn_params
    assert count_macs(module, x) == conv_weights * size * size


def test_relu_applies_to_both_halves_and_cut_keeps_intrinsic_first():
    module = GhostModule(4, 5, ratio=3, dw_size=3, relu=True).eval()
    y = module(torch.randn(2, 4, 8, 8))
    assert (y >= 0).all()
    intrinsic = module.primary_conv(torch.zeros(1, 4, 8, 8))
    assert intrinsic.shape[1] == 2  # ceil(5 / 3)
    linear = GhostModule(4, 5, relu=False).eval()
    assert (linear(torch.randn(2, 4, 8, 8)) < 0).any()


@pytest.mark.parametrize(("s", "d"), [(1, 3), (0, 3), (2, 2), (2, 0), (2, -1), (2.5, 3)])
def test_bad_ratio_or_kernel_is_rejected(s, d):
    with pytest.raises(ValueError, match=r"ghost ratio|cheap kernel"):
        GhostModule(8, 8, ratio=s, dw_size=d)


def authors_forward(module: GhostModule, x: torch.Tensor) -> torch.Tensor:
    """The authors' Ghost module: intrinsic maps, then every ghost in their order (map 0's,
    map 1's, ...), cut to ``out``."""
    intrinsic = module.primary_conv(x)
    return torch.cat([intrinsic, module.cheap_operation(intrinsic)], 1)[:, : module.out_channels]


@pytest.mark.parametrize(("out", "s"), [(64, 3), (16, 3), (32, 3), (64, 5), (10, 4), (12, 3)])
def test_the_channels_are_the_authors_set_permuted_even_when_s_does_not_divide(out, s):
    torch.manual_seed(0)
    module = GhostModule(6, out, 1, s, 3).eval()
    x = torch.randn(1, 6, 5, 5)
    mine, theirs = module(x)[0].flatten(1), authors_forward(module, x)[0].flatten(1)
    # Map each of our channels to the authors' channel with the same values.
    match = [int((theirs - channel).abs().sum(1).argmin()) for channel in mine]
    assert sorted(match) == list(range(out))  # a permutation: same set, nothing twice
    torch.testing.assert_close(mine, theirs[match])
    maps = -(-out // s)
    # out=64, s=3: the authors give maps 0..20 two ghosts and map 21 none.
    ghosts_of = [
        sum(1 for c in match if c >= maps and (c - maps) // (s - 1) == i) for i in range(maps)
    ]
    assert ghosts_of == [min(s - 1, max(0, out - maps - i * (s - 1))) for i in range(maps)]
