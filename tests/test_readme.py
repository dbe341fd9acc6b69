"""Every `compress` command in the README runs as written, on a tiny budget.

Commands are read from the README's ``bash`` blocks. A placeholder such as ``<RUN_DIR>``
(written so that nobody pastes it) becomes a real run made here; CIFAR-10 comes from a
tiny set of shards in ``$COMPRESS_DATA``, as a user's download would. Commands that need
the internet are skipped, each with its reason.
"""

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compress import create_model
from compress.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"

# What only the internet (or a server) can give: skipped here, with the reason.
NEEDS_NETWORK = {
    "timm's pretrained weights": re.compile(
        r"^compress ghost (maps|fit)(?!.*--model <)|timm:\S+ --"
    ),
    "a PostgreSQL server": re.compile(r"postgresql://"),
}
# Options that shrink a command's work to seconds, per sub-command.
TINY_DATA = ["--train-size", "16", "--test-size", "16", "--batch-size", "8"]
BUDGET = {
    ("run",): ["--epochs", "1", *TINY_DATA],
    ("study", "pareto"): ["--trials", "1", "--epochs", "1", *TINY_DATA],
    ("study", "ablation"): ["--s", "2", "--d", "3", "--epochs", "1", *TINY_DATA],
    ("reproduce", "seed"): ["--epochs", "1", *TINY_DATA],
    ("profile",): ["--repeats", "1"],
}


def readme_commands() -> list[str]:
    commands, in_bash = [], False
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            in_bash = line.strip() == "```bash"
            continue
        command = line.split("  #", 1)[0].strip()
        if in_bash and command.startswith("compress "):
            commands.append(command)
    return commands


# Options whose value is itself a budget: capped where a command gives them.
CAPPED = {"--finetune-epochs": "1", "--qat-epochs": "1", "--teacher-epochs": "1"}


def budget(argv: list[str]) -> list[str]:
    for index, word in enumerate(argv[:-1]):
        if word in CAPPED:
            argv[index + 1] = CAPPED[word]
    for prefix, extra in BUDGET.items():
        if tuple(argv[: len(prefix)]) == prefix:
            if "--resume" in argv:  # a resumed run keeps its own options
                return []
            if prefix != ("profile",) and "vgg16" not in argv:  # VGG's five pools want 32 px
                return [*extra, "--input-size", "16"]
            return extra
    return []


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A directory with tiny CIFAR-10 shards, an image, and a finished ResNet-20 run: what
    the placeholders stand for."""
    root = tmp_path_factory.mktemp("readme")
    data = root / "cifar"
    data.mkdir()
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        x = rng.integers(0, 256, (128, 32, 32, 3), dtype=np.uint8)
        np.savez(data / f"cifar10-{split}.npz", x=x, y=np.arange(128, dtype=np.uint8) % 10)
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(root / "photo.png")
    made = root / "made"
    argv = ["run", "baseline", "--model", "resnet20", "--out", str(made), "--dataset", "digits"]
    assert main([*argv, *BUDGET[("run",)]]) == 0
    (run_dir,) = made.glob("resnet20-*")
    for name, file in (("resnet20", "weights.th"), ("resnet56", "teacher.th")):
        state = {f"module.{k}": v for k, v in create_model(name).state_dict().items()}
        torch.save({"state_dict": state, "best_prec1": 0.0}, root / file)  # as published
    return root, data, run_dir


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_runs_as_written(command, workspace, monkeypatch, capsys):
    root, data, run_dir = workspace
    for reason, pattern in NEEDS_NETWORK.items():
        if pattern.search(command):
            pytest.skip(f"needs {reason}")
    monkeypatch.chdir(root)
    monkeypatch.setenv("COMPRESS_DATA", str(data))
    filled = command.replace("<RUN_DIR>", str(run_dir)).replace("<IMAGE>", "photo.png")
    filled = filled.replace("<WEIGHTS>", "weights.th").replace("<TEACHER_WEIGHTS>", "teacher.th")
    argv = shlex.split(filled)[1:]
    if argv[:2] == ["study", "show"] and not (root / "runs/studies/pareto.db").exists():
        # what it shows: the README's first study, made here when another test process
        # ran that command (the tests run in parallel)
        first = shlex.split(next(c for c in readme_commands() if c.startswith("compress study p")))
        assert main([*first[1:], *budget(first[1:])]) == 0
    try:
        code = main([*argv, *budget(argv)])
    except SystemExit as exit_:  # --help
        code = exit_.code
    assert code == 0, capsys.readouterr().err


def test_the_readme_states_what_the_main_job_recorded():
    """The setup paragraph's numbers are the committed main-job summary's, rounded."""
    import json

    (summary,) = (README.parent / "docs/results/runs/main-job").glob("*.json")
    metrics = json.loads(summary.read_text())["metrics"]
    assert metrics["status"] == "completed" and metrics["epochs_done"] == 8
    final, best = (f"{100 * metrics[k]:.1f}%" for k in ("final_val_acc", "best_val_acc"))
    setup = README.read_text().split("## Setup", 1)[1].split("```bash", 1)[0]
    assert f"ends at {final} test top-1 (best epoch {best})" in " ".join(setup.split())
