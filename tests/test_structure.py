"""The packages' one direction of dependency, every registered model built and measured,
and a command line that starts without the libraries only some commands use."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compress.measure import profile_model
from compress.registry import create_model, get_entry, list_models

ROOT = Path(__file__).resolve().parents[1]
# Which top-level packages each may import: model code imports none of the framework.
ALLOWED = {
    "baselines": {"baselines"},
    "ghost": {"ghost", "baselines"},
    "compress": {"compress", "ghost", "baselines"},
    "studies": {"studies", "compress", "ghost", "baselines"},
}
OURS = set(ALLOWED)


def imports(path: Path) -> set[str]:
    """Top-level names of this project's packages that ``path`` imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {name for name in names if name.split(".")[0] in OURS}
    return found


def test_dependencies_point_one_way():
    wrong = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            in_cli = path.parent.name == "cli" and path.parent.parent.name == "compress"
            in_cli |= path == ROOT / "compress" / "__main__.py"  # python -m compress: the CLI
            for name in imports(path):
                top = name.split(".")[0]
                if top == "studies" and in_cli:
                    continue  # the command line builds on everything
                if top not in allowed or (name.startswith("compress.cli") and not in_cli):
                    wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_nothing_imports_the_command_line():
    users = [
        path.relative_to(ROOT)
        for package in ALLOWED
        for path in (ROOT / package).rglob("*.py")
        if "cli" not in path.parts
        and path != ROOT / "compress" / "__main__.py"
        and any(name.startswith("compress.cli") for name in imports(path))
    ]
    assert not users


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_builds_and_is_measured(name):
    entry = get_entry(name)
    size = 32 if entry.input_size == 32 else 64  # small: a forward pass, not a benchmark
    model = create_model(name, num_classes=10)
    profile = profile_model(model, size, latency_repeats=0)
    assert profile.params > 0 and profile.macs > 0
    assert model.eval()(torch.zeros(2, 3, size, size)).shape == (2, 10)
    if entry.reference is not None:
        get_entry(entry.reference)  # what it is read against is registered too


def test_the_command_line_starts_without_the_libraries_only_some_commands_use():
    """Importing each of these after torch took 0.8-3.8 s on the 2-core VM, which every
    command would pay at start-up (``compress --help``: 4.8 s with matplotlib, 3.9 s
    without); they load where they are used."""
    heavy = ("matplotlib", "torchvision", "torch_pruning", "brevitas", "sklearn", "timm")
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys, compress.cli; print([m for m in {heavy} if m in sys.modules])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.strip() == "[]"
