"""Where a GhostNet training step's time goes on a GPU: CUDA kernel time per step, by kernel.

Profiles eager training steps (forward, backward, Adam) of this repo's GhostNet at batch
128 and prints the kernels with the most total time, the kernel time per step and the
number of kernel launches per step. If the kernel time per step is close to the CUDA-graph
step time (``bench/train_throughput.py``), the step is bound by the kernels, not launches.

    python bench/gpu_step_profile.py --size 32 --steps 10
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from compress.registry import create_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = True
    model = create_model("ghostnet", num_classes=10).cuda().train()
    optimizer = torch.optim.Adam(model.parameters(), 1e-3, fused=True)
    images = torch.randn(args.batch_size, 3, args.size, args.size, device="cuda")
    labels = torch.randint(0, 10, (args.batch_size,), device="cuda")

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as trace:
        for _ in range(args.steps):
            step()
        torch.cuda.synchronize()
    events = [e for e in trace.key_averages() if e.device_type.name == "CUDA"]
    total_us = sum(e.self_device_time_total for e in events)
    launches = sum(e.count for e in events)
    print(
        f"kernel time per step: {total_us / args.steps / 1000:.3f} ms, "
        f"{launches / args.steps:.0f} kernels per step"
    )
    for event in sorted(events, key=lambda e: -e.self_device_time_total)[: args.top]:
        share = event.self_device_time_total / total_us
        print(f"{100 * share:5.1f}%  {event.count // args.steps:4d}/step  {event.key[:100]}")


if __name__ == "__main__":
    main()
