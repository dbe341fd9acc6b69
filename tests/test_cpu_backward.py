"""The CPU backward's depthwise and pointwise gradients are PyTorch's, and the CPU engine
takes them."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import compress.cpu_backward
from compress.cpu_backward import (
    CpuConvolutionBackward,
    depthwise_weight_gradient,
    has_depthwise,
    pointwise_gradients,
)
from compress.data import make_synthetic
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


def gradients(model: nn.Module, x: torch.Tensor, faster: bool) -> dict[str, torch.Tensor]:
    model.zero_grad()
    torch.manual_seed(1)  # the same dropout mask both times
    loss = F.cross_entropy(model(x), torch.arange(len(x)) % 10)
    if faster:
        with CpuConvolutionBackward():
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
    expected, got = gradients(model, x, faster=False), gradients(model, x, faster=True)
    for key, value in expected.items():  # float32 sums in another order: ~1e-5 apart
        torch.testing.assert_close(got[key], value, rtol=1e-4, atol=1e-4, msg=key)


@pytest.mark.parametrize("size", [1, 2, 4])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("mask", [[True, True, True], [False, True, False], [True, False, False]])
def test_the_pointwise_gradients_are_pytorchs(size, memory_format, mask):
    torch.manual_seed(0)
    x = torch.randn(5, 6, size, size).contiguous(memory_format=memory_format)
    weight = torch.randn(7, 6, 1, 1)
    grad = torch.randn(5, 7, size, size).contiguous(memory_format=memory_format)
    expected = torch.ops.aten.convolution_backward(
        grad, x, weight, [7], [1, 1], [0, 0], [1, 1], False, [0, 0], 1, mask
    )
    got = pointwise_gradients(x, grad, weight, mask)
    for want, reference, value in zip(mask, expected, got, strict=True):
        if not want:
            assert value is None
            continue
        assert value.shape == reference.shape
        torch.testing.assert_close(value, reference, rtol=1e-5, atol=1e-5)
    if mask[0]:  # the input's layout, so the layers below get what PyTorch would give
        assert got[0].is_contiguous(memory_format=memory_format)


@pytest.mark.parametrize(
    ("height", "width", "taken"),
    [(1, 1, True), (2, 2, True), (4, 2, True), (3, 3, False), (4, 4, False), (8, 8, False)],
)
def test_depthwise_weight_gradients_are_taken_where_the_map_is_smaller_than_the_kernel(
    height, width, taken, monkeypatch
):
    """Where the map is at least the kernel's size, PyTorch's (oneDNN's) depthwise kernel
    is the faster one and keeps the work."""
    calls = []

    def counted(*args):
        calls.append(args)
        return depthwise_weight_gradient(*args)

    monkeypatch.setattr(compress.cpu_backward, "depthwise_weight_gradient", counted)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1, groups=6), nn.Flatten(), nn.LazyLinear(10))
    x = torch.randn(4, 6, height, width)
    model(x)
    expected, got = gradients(model, x, faster=False), gradients(model, x, faster=True)
    assert len(calls) == taken
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-5, msg=key)


def test_other_convolutions_are_left_to_pytorch(monkeypatch):
    def refused(*args):
        raise AssertionError("neither a small undilated depthwise nor a small pointwise conv")

    monkeypatch.setattr(compress.cpu_backward, "depthwise_weight_gradient", refused)
    monkeypatch.setattr(compress.cpu_backward, "pointwise_gradients", refused)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(4, 4, 5, padding=2, groups=4),  # depthwise, on a map as large as its kernel
        nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=4),  # dilated
        nn.Conv2d(4, 4, 3, padding=1, groups=2),  # grouped, not depthwise
        nn.Conv2d(4, 8, 3, padding=1, groups=4),  # two filters a channel
        nn.Conv2d(8, 8, 1),  # pointwise on 36 pixels: too many
        nn.AdaptiveAvgPool2d(4),
        nn.Conv2d(8, 8, 1, stride=2),  # pointwise on 16 pixels, but strided
        nn.Conv2d(8, 8, 1, padding=1),  # ... padded
        nn.Conv2d(8, 8, 1, groups=2),  # ... grouped
        nn.Flatten(),
        nn.LazyLinear(10),
    )
    x = torch.randn(2, 4, 6, 6)
    model(x)
    expected, got = gradients(model, x, faster=False), gradients(model, x, faster=True)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, msg=key)


def test_the_cpu_engine_takes_small_depthwise_and_pointwise_gradients(monkeypatch):
    calls = {"depthwise": 0, "pointwise": 0}

    def counted(kind, compute):
        def call(*args):
            calls[kind] += 1
            return compute(*args)

        return call

    for name, compute in (
        ("depthwise", depthwise_weight_gradient),
        ("pointwise", pointwise_gradients),
    ):
        monkeypatch.setattr(compress.cpu_backward, compute.__name__, counted(name, compute))
    data = make_synthetic(train_size=32, test_size=16)
    model = create_model("ghostnet", num_classes=data.num_classes, width=0.5)
    # depthwise convolutions on maps smaller than their kernel; 1x1 convolutions without
    # stride or padding on maps of <= 16 pixels
    small: dict[str, list[nn.Module]] = {"depthwise": [], "pointwise": []}

    def keep_small(module: nn.Module, inputs: tuple[torch.Tensor, ...], _: torch.Tensor) -> None:
        h, w = inputs[0].shape[2:]
        if module.groups > 1 and (h < module.kernel_size[0] or w < module.kernel_size[1]):
            small["depthwise"].append(module)
        if module.groups == 1 and h * w <= 16:
            small["pointwise"].append(module)

    convolutions = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    depthwise = [m for m in convolutions if m.groups > 1]
    pointwise = [
        m for m in convolutions if m.kernel_size == m.stride == (1, 1) and m.padding == (0, 0)
    ]
    hooks = [m.register_forward_hook(keep_small) for m in depthwise + pointwise]
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 16, 16))
    for hook in hooks:
        hook.remove()
    config = TrainConfig(epochs=1, batch_size=16, device="cpu", precise_bn=0, input_size=16)
    train(model, data, config)
    assert 5 < len(small["depthwise"]) < len(depthwise)  # the last stages' 3x3 and 5x5
    assert len(small["pointwise"]) > 10  # squeeze-excite, the head and the last stages
    # every small depthwise and every small pointwise convolution, both steps
    assert calls == {kind: 2 * len(modules) for kind, modules in small.items()}
