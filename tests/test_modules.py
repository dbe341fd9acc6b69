"""Your own ``nn.Module`` through the Python API: pruned, quantized, distilled."""

import pytest
import torch
from clitools import QUICK_SYNTHETIC
from torch import nn

from compress import load, run
from compress.errors import UsageError

QUICK = {**QUICK_SYNTHETIC, "epochs": 1, "curves": False}


class TinyNet(nn.Module):
    """Somebody's network, registered nowhere."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


def test_your_own_module_is_pruned_quantized_and_taught_as_it_is(tmp_path):
    torch.manual_seed(0)
    mine = TinyNet()
    before = {k: v.clone() for k, v in mine.state_dict().items()}
    pruned = run("prune", tmp_path, model=mine, ratio=0.5, finetune_epochs=0, **QUICK)
    assert pruned.metrics["macs_fraction"] < 0.6
    assert all(torch.equal(before[k], v) for k, v in mine.state_dict().items())  # a copy
    quantized = run("quantize", tmp_path, model=mine, weight_bits=4, act_bits=4, **QUICK)
    assert quantized.metrics["bops"] < quantized.metrics["float_bops"]
    teacher = load(pruned.run_dir)  # a trained (pruned) network of this process
    taught = run("distill", tmp_path, model=mine, teacher=teacher, **QUICK)
    assert taught.metrics["status"] == "completed"
    options = [use["options"] for use in _config(taught.run_dir)["techniques"]]
    assert options[0]["model"] == "python:TinyNet"
    assert options[1]["teacher_model"] == "python:TinyNet-2"  # another module, another name
    (kept,) = (tmp_path / "cache").glob("teacher-*.pt")
    assert options[1]["teacher"] == str(kept)


def test_a_module_with_other_classes_than_the_data_is_refused_before_a_run(tmp_path):
    with pytest.raises(UsageError, match="answers 10 classes, the data has 4"):
        run("prune", tmp_path / "out", model=TinyNet(classes=10), **QUICK)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def _config(run_dir):
    import json

    return json.loads((run_dir / "config.json").read_text())
