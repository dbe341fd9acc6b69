"""One run over two processes (``torchrun``, gloo on the CPU) against one process."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

SCRIPT = """
import sys

import torch
from torch import nn

import compress


class Tiny(nn.Module):  # no BatchNorm: each process would normalise only its share
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.features(x))


torch.manual_seed(0)
compress.run(
    "baseline", sys.argv[1], model=Tiny(), dataset="synthetic", train_size=64, test_size=32,
    batch_size=16, epochs=int(sys.argv[2]), input_size=16, precise_bn=0, device="cpu",
    optimizer="sgd", lr=0.1, seed=3, curves=False,
)
"""


def launch(tmp_path: Path, out: Path, processes: int, epochs: int) -> subprocess.Popen:
    script = tmp_path / "train_tiny.py"
    script.write_text(SCRIPT)
    command = [sys.executable, str(script), str(out), str(epochs)]
    if processes > 1:
        command[1:1] = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                        str(processes)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path.cwd())}
    return subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def only_run(out: Path) -> Path:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


def test_two_processes_train_the_weights_one_process_trains(tmp_path):
    """--batch-size is the global batch: each process trains on its half of every batch
    (the same images and crops) and DDP averages the gradients."""
    for processes in (1, 2):
        done = launch(tmp_path, tmp_path / f"out{processes}", processes, epochs=2)
        _, stderr = done.communicate(timeout=300)
        assert done.returncode == 0, stderr
    alone, shared = only_run(tmp_path / "out1"), only_run(tmp_path / "out2")  # rank 0 only
    one, two = load_file(alone / "model.safetensors"), load_file(shared / "model.safetensors")
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-5)
    assert not torch.equal(one["fc.weight"], torch.zeros_like(one["fc.weight"]))
    assert json.loads((shared / "config.json").read_text())["processes"] == 2
    histories = [json.loads((d / "metrics.json").read_text())["history"] for d in (alone, shared)]
    for first, second in zip(*histories, strict=True):
        assert first["images"] == second["images"] == 64  # all-reduced over the processes
        assert abs(first["train_loss"] - second["train_loss"]) < 1e-4
        assert first["val_acc"] == second["val_acc"]


def test_a_killed_process_ends_the_run_with_its_checkpoint_intact(tmp_path):
    out = tmp_path / "out"
    running = launch(tmp_path, out, 2, epochs=400)
    deadline = time.monotonic() + 120
    while not list(out.glob("*/checkpoint.pt")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert list(out.glob("*/checkpoint.pt")), "no epoch finished"
    rank_one = [
        int(p.name) for p in Path("/proc").iterdir()
        if p.name.isdigit() and b"\x00RANK=1\x00" in b"\x00" + _environ(p)
    ]  # fmt: skip
    assert rank_one
    os.kill(rank_one[0], signal.SIGKILL)
    running.communicate(timeout=120)
    assert running.returncode != 0
    run_dir = only_run(out)
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert 1 <= checkpoint["epoch"] < 400
    status = json.loads((run_dir / "metrics.json").read_text())["status"]
    assert status in ("interrupted", "failed")


def _environ(process: Path) -> bytes:
    try:
        return (process / "environ").read_bytes()
    except OSError:
        return b""
