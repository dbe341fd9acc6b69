import os

import torch
import torch_pruning as tp
from torch import nn

from compress.measure import (
    activation_bytes,
    count_macs,
    count_params,
    latencies_ms,
    profile_model,
    serialized_bytes,
)


def test_single_layer_macs_are_hand_arithmetic():
    x = torch.randn(1, 8, 15, 15)
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1)
    assert count_macs(conv, x) == 16 * 8 * 9 * 8 * 8
    grouped = nn.Conv2d(8, 16, 5, padding=2, groups=4)
    assert count_macs(grouped, x) == 16 * 2 * 25 * 15 * 15
    linear = nn.Linear(100, 7)
    assert count_macs(linear, torch.randn(3, 100)) == 3 * 100 * 7


def test_torch_pruning_counter_agrees_on_a_plain_conv_net():
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False),
        nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False),
        nn.Conv2d(32, 32, 1, bias=False),
        nn.Flatten(),
        nn.Linear(32 * 8 * 8, 10, bias=False),
    )
    x = torch.randn(1, 3, 16, 16)
    tp_macs, tp_params = tp.utils.count_ops_and_params(net, x)
    assert count_macs(net, x) == int(tp_macs)
    assert count_params(net)[0] == tp_params


def test_params_split_and_profile_fields():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4))
    net[1].weight.requires_grad_(False)
    with torch.no_grad():
        net[0].weight[0].zero_()
    total, trainable, nonzero = count_params(net)
    assert (total, trainable) == (108 + 8, 108 + 4)
    assert nonzero == 108 - 27 + 4  # BN bias starts at zero
    profile = profile_model(net, 10, latency_repeats=3)
    assert profile.macs == 4 * 27 * 8 * 8 and profile.flops == 2 * profile.macs
    assert profile.activation_bytes == (4 * 64 + 4 * 64) * 4
    assert profile.serialized_bytes == serialized_bytes(net) > profile.param_bytes
    assert profile.latency_ms > 0 and profile.threads == torch.get_num_threads()
    assert profile.peak_memory_bytes is None


def test_activations_count_each_tensor_once():
    """In-place ReLU, Identity (a BN a Ghost module replaced) and views add nothing."""
    x = torch.zeros(1, 3, 4, 4)
    block = [nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True)]
    plain = nn.Sequential(*block, nn.Identity(), nn.Flatten()).eval()
    assert activation_bytes(plain, x) == 2 * 8 * 16 * 4  # conv and BN outputs
    not_inplace = nn.Sequential(*block[:2], nn.ReLU()).eval()
    assert activation_bytes(not_inplace, x) == 3 * 8 * 16 * 4


def test_side_by_side_latency_times_every_model_in_turn():
    calls = []

    class Recorder(nn.Module):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def forward(self, x):
            calls.append(self.name)
            return x

    times = latencies_ms([Recorder("a"), Recorder("b")], torch.zeros(1), repeats=3, warmup=1)
    assert len(times) == 2 and all(t >= 0 for t in times)
    assert calls == ["a", "b"] * 4  # interleaved: a change of load reaches both alike


def test_latency_comes_with_its_spread_and_a_busy_machine_is_flagged():
    import subprocess
    import sys

    from compress.measure import cpu_used_by_others, timings
    from compress.reports import latency

    (timing,) = timings([torch.nn.Linear(8, 8)], torch.randn(1, 8), repeats=20)
    assert timing.low_ms <= timing.median_ms <= timing.high_ms
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.3)
        others = cpu_used_by_others(interval=0.5)
    finally:
        spinner.kill()
    cores = os.cpu_count() or 1
    assert others is not None and others > 0.6 / cores  # one core of the machine's, spinning
    cell = latency(1.5, {"device": "cpu", "threads": 1, "latency_quartiles": [1.4, 1.7],
                         "cpu_used_by_others": others})  # fmt: skip
    assert cell.startswith("1.50 ms [1.40-1.70] (cpu, 1 thr, machine busy: ")
