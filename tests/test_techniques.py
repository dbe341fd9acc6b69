"""The technique registry: composition order, `compress list`, and an outside plugin."""

import json
import os
import textwrap

import pytest
from clitools import compress_process

from compress.errors import UsageError
from compress.techniques import list_techniques, parse_composition


def test_composition_runs_in_stage_order_with_one_builder():
    assert parse_composition("prune+ghost") == ["ghost", "prune"]
    assert parse_composition("prune") == ["baseline", "prune"]
    with pytest.raises(UsageError, match="both build the model"):
        parse_composition("ghost+baseline")
    with pytest.raises(UsageError, match="repeats"):
        parse_composition("prune+prune")
    with pytest.raises(UsageError, match="unknown technique 'prun'; did you mean prune"):
        parse_composition("ghost+prun")


def test_builtin_techniques_are_listed():
    assert {"baseline", "ghost", "prune"} <= set(list_techniques())


PLUGIN = '''
from dataclasses import dataclass

import torch

from compress import register_model
from compress.options import Options, option
from compress.techniques import Technique


@dataclass
class ShrinkConfig(Options):
    factor: float = option(0.5, "scale every weight by this", low=0, high=1)


class Shrink(Technique):
    """A post-training technique from outside the repository."""

    stage = "post"
    config_cls = ShrinkConfig
    summary = "scale weights (test plugin)"

    def post_train(self, model, config, context):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.mul_(config.factor)
        return model

    def report(self, model, config, context):
        return {"shrink_factor": config.factor}


@register_model("tiny_cnn", input_size=32, num_classes=10)
def tiny_cnn(num_classes=10, width=8):
    """A two-layer net from outside the repository."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, width, 3, padding=1),
        torch.nn.BatchNorm2d(width),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(width, num_classes),
    )
'''


@pytest.fixture
def plugin_path(tmp_path):
    """A package installed the way pip installs one: module + dist-info entry point."""
    (tmp_path / "shrink_plugin.py").write_text(textwrap.dedent(PLUGIN))
    info = tmp_path / "shrink_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shrink-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[compress.techniques]\nshrink = shrink_plugin:Shrink\n"
        "[compress.models]\nshrink_models = shrink_plugin\n"
    )
    return tmp_path


def test_an_installed_plugin_is_listed_and_runs_composed(plugin_path, tmp_path):
    """A package adds a technique and a model through entry points, nothing else."""
    env = {**os.environ, "PYTHONPATH": str(plugin_path), "COLUMNS": "200"}

    def compress(*args):
        return compress_process(*args, cwd=tmp_path, env=env)

    listing = compress("list")
    assert listing.returncode == 0 and "shrink" in listing.stdout and "--factor" in listing.stdout
    assert "prune" in listing.stdout and "ghost" in listing.stdout
    models = compress("models")
    assert "tiny_cnn" in models.stdout and "two-layer net from outside" in models.stdout
    result = compress(
        "run",
        "shrink+baseline",
        "--model",
        "tiny_cnn",
        "--factor",
        "0.25",
        "--dataset",
        "synthetic",
        "--epochs",
        "1",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["technique"] == "baseline+shrink" and metrics["shrink_factor"] == 0.25
    bad = compress("run", "shrink", "--factor", "2")
    assert bad.returncode == 2 and "--factor must be <= 1" in bad.stderr


def test_python_api_runs_a_composition(tmp_path):
    from rich.console import Console

    import compress

    outcome = compress.run(
        "prune+ghost",
        out=tmp_path,
        backbone="resnet20",
        ratio=0.5,
        finetune_epochs=0,
        dataset="synthetic",
        train_size=128,
        epochs=1,
        batch_size=64,
        input_size=16,
        console=Console(quiet=True),
    )
    assert outcome.metrics["technique"] == "ghost+prune"
    assert outcome.metrics["macs"] < outcome.metrics["unpruned_macs"]
    assert (outcome.run_dir / "metrics.json").exists()
    with pytest.raises(UsageError, match="takes no option 'sparsity'"):
        compress.run("prune", out=tmp_path, sparsity=0.5)


def test_compress_models_shows_every_name_whole_on_80_columns():
    from clitools import compress_cli

    from compress.registry import list_models
    from compress.reports import console

    assert console.width == 80  # what a terminal that is not one gets
    listed = compress_cli("models").stdout
    assert all(f"│ {name} " in listed for name in list_models())
