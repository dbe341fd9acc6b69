"""The grouped depthwise weight gradient gives PyTorch's gradients, and the CPU engine uses it."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import compress.depthwise
from compress.data import make_synthetic
from compress.depthwise import GroupedDepthwiseBackward, depthwise_weight_gradient, has_depthwise
from compress.engine import TrainConfig, train
from compress.registry import create_model


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding"),
    [(8, 3, 1, 1), (9, 3, 2, 1), (8, 5, 2, 2), (7, (3, 5), 1, (1, 2)), (6, 3, 1, 0), (10, 7, 3, 3)],
)
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_the_grouped_weight_gradient_is_pytorchs(size, kernel, stride, padding, memory_format):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 6, kernel, stride=stride, padding=padding, groups=6, bias=False)
    x = torch.randn(5, 6, size, size).contiguous(memory_format=memory_format)
    grad = torch.randn_like(conv(x)).contiguous(memory_format=memory_format)
    expected = torch.nn.grad.conv2d_weight(x, conv.weight.shape, grad, stride, padding, groups=6)
    got = depthwise_weight_gradient(x, grad, conv.kernel_size, conv.stride, conv.padding)
    assert got.shape == expected.shape == (6, 1, *conv.kernel_size)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def gradients(model: nn.Module, x: torch.Tensor, grouped: bool) -> dict[str, torch.Tensor]:
    model.zero_grad()
    torch.manual_seed(1)  # the same dropout mask both times
    loss = F.cross_entropy(model(x), torch.arange(len(x)) % 10)
    if grouped:
        with GroupedDepthwiseBackward():
            loss.backward()
    else:
        loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("name", ["ghostnet", "mobilenetv3_large"])
def test_a_whole_network_gets_pytorchs_gradients(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    assert has_depthwise(model)
    expected, got = gradients(model, x, grouped=False), gradients(model, x, grouped=True)
    for key, value in expected.items():  # float32 sums in another order: ~1e-5 apart
        torch.testing.assert_close(got[key], value, rtol=1e-4, atol=1e-4, msg=key)


def test_other_convolutions_are_left_to_pytorch(monkeypatch):
    def refused(*args):
        raise AssertionError("not an undilated depthwise convolution")

    monkeypatch.setattr(compress.depthwise, "depthwise_weight_gradient", refused)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=4),  # dilated
        nn.Conv2d(4, 4, 3, padding=1, groups=2),  # grouped, not depthwise
        nn.Conv2d(4, 8, 3, padding=1, groups=4),  # two filters a channel
        nn.Conv2d(8, 8, 1),
        nn.Flatten(),
        nn.LazyLinear(10),
    )
    x = torch.randn(2, 4, 6, 6)
    model(x)
    expected, got = gradients(model, x, grouped=False), gradients(model, x, grouped=True)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, msg=key)


def test_the_cpu_engine_takes_depthwise_weight_gradients_grouped(monkeypatch):
    calls = []

    def counted(*args):
        calls.append(args[0].shape)
        return depthwise_weight_gradient(*args)

    monkeypatch.setattr(compress.depthwise, "depthwise_weight_gradient", counted)
    data = make_synthetic(train_size=32, test_size=16)
    model = create_model("ghostnet", num_classes=data.num_classes, width=0.5)
    config = TrainConfig(epochs=1, batch_size=16, device="cpu", precise_bn=0, input_size=16)
    train(model, data, config)
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(calls) == 2 * len(depthwise)  # every depthwise convolution, both steps
