"""``compress.load``: every technique's network comes back with its final weights."""

import json

import pytest
import torch
from rich.console import Console

from compress import load
from compress.data import make_synthetic
from compress.engine import TrainConfig, Trainer
from compress.loading import RunLoadError
from compress.runner import run

QUICK = {"dataset": "synthetic", "train_size": 128, "epochs": 1, "batch_size": 64, "input_size": 16}
RUNS = {
    "baseline": ("baseline", {"model": "resnet20"}),
    "ghost": ("ghost", {"backbone": "resnet20"}),
    "channels": ("prune", {"model": "resnet20", "ratio": 0.5, "finetune_epochs": 1}),
    "weights": ("prune", {"model": "resnet20", "method": "weights", "finetune_epochs": 0}),
    "qat": ("quantize", {"model": "resnet20", "weight_bits": 2, "act_bits": 4}),
    "ptq+prune": (
        "prune+quantize",
        {"model": "resnet20", "mode": "ptq", "weight_bits": 8, "finetune_epochs": 0},
    ),
    "distill": ("distill", {"model": "resnet20", "teacher": "resnet20", "teacher_epochs": 1}),
}


def accuracy_of(model) -> float:
    recipe = TrainConfig(device="cpu", precise_bn=0, batch_size=64, input_size=16)
    _, accuracy = Trainer(model, make_synthetic(), recipe, torch.Generator()).evaluate()
    return accuracy


@pytest.mark.parametrize("kind", sorted(RUNS))
def test_a_finished_run_reloads_with_its_final_accuracy(tmp_path, kind):
    technique, options = RUNS[kind]
    outcome = run(technique, tmp_path, console=Console(quiet=True), **QUICK, **options)
    model = load(outcome.run_dir)
    assert not model.training
    assert not hasattr(model, "kd_adapters")
    assert accuracy_of(model) == outcome.metrics["final_val_acc"]
    params = sum(p.numel() for n, p in model.named_parameters() if "_quant." not in n)
    assert params == outcome.metrics["params"]


def test_what_cannot_be_loaded_says_why(tmp_path):
    with pytest.raises(RunLoadError, match="is not a directory"):
        load(tmp_path / "missing")
    with pytest.raises(RunLoadError, match="is not a run"):
        load(tmp_path)
    outcome = run("baseline", tmp_path, console=Console(quiet=True), model="resnet20", **QUICK)
    config_path = outcome.run_dir / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "format": 99}))
    with pytest.raises(RunLoadError, match="newer than this compress reads"):
        load(outcome.run_dir)
    config_path.write_text(
        json.dumps(
            {**config, "techniques": [{"name": "baseline", "options": {"model": "resnet32"}}]}
        )
    )
    with pytest.raises(RunLoadError, match="do not fit the network"):
        load(outcome.run_dir)
    config_path.write_text(json.dumps(config))
    metrics_path = outcome.run_dir / "metrics.json"
    metrics_path.write_text(
        json.dumps({**json.loads(metrics_path.read_text()), "status": "running"})
    )
    with pytest.raises(RunLoadError, match="did not complete"):
        load(outcome.run_dir)
