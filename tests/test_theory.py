import pytest

from baselines.cifar import vgg16
from compress.ratios import layer_ratios
from compress.registry import create_model
from ghost.ghostify import ghostify
from ghost.theory import approximate_ratio, compression_ratio, speedup_ratio


def test_equations_4_and_5():
    # c = 64, k = 3, s = 2, d = 3: 576 / (288 + 4.5)
    assert speedup_ratio(64, 3, 2, 3) == pytest.approx(576 / 292.5)
    assert compression_ratio(64, 3, 2, 3) == speedup_ratio(64, 3, 2, 3)
    assert approximate_ratio(64, 2) == pytest.approx(128 / 65)
    assert speedup_ratio(512, 3, 4, 3) == pytest.approx(4, rel=0.01)
    with pytest.raises(ValueError):
        speedup_ratio(64, 3, 1, 3)


def test_measured_ratios_equal_theory_when_n_divides_by_s():
    model = vgg16()
    report = ghostify(model, 2, 3)
    rows = layer_ratios(model, report, 32)
    assert len(rows) == 12
    assert rows[0].output_hw == (32, 32) and rows[-1].output_hw == (2, 2)
    for row in rows:
        assert row.mac_ratio == pytest.approx(row.theory, rel=1e-12)
        assert row.param_ratio == pytest.approx(row.theory, rel=1e-12)


def test_measured_ratio_falls_below_theory_when_ceil_rounds_up():
    model = create_model("resnet20")
    report = ghostify(model, 3, 3)  # 16 / 3 and 32 / 3 round up
    rows = layer_ratios(model, report, 32)
    assert all(row.mac_ratio < row.theory for row in rows if row.n % 3)
