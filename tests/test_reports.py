"""``compress compare`` and ``compress reproduce seed``: the seed's table, from real runs."""

import json

import pytest
from clitools import compress_cli

from compress.runner import run

QUICK = {"dataset": "synthetic", "epochs": 2, "batch_size": 64}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return [run("baseline", out, model=m, **QUICK).run_dir for m in ("resnet20", "ghost_resnet20")]


def test_compare_puts_the_seed_columns_of_each_run_side_by_side(two_runs, tmp_path):
    result = compress_cli("compare", *map(str, two_runs), "--png", "cmp.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    metrics = [json.loads((d / "metrics.json").read_text()) for d in two_runs]

    def row(label):
        (line,) = [line for line in lines if line.startswith(f"│ {label} ")]
        return [cell.strip() for cell in line.split("│")[2:-1]]

    assert row("Total params") == [f"{m['params'] / 1e3:.2f} K ({m['params']:,})" for m in metrics]
    assert row("Mult-Adds") == [f"{m['macs'] / 1e6:.2f} M" for m in metrics]
    assert row("epochs") == ["2", "2"]
    for which, index in (("first", 0), ("last", -1)):
        assert row(f"{which} epoch: train loss") == [
            f"{m['history'][index]['train_loss']:.4f}" for m in metrics
        ]
        assert row(f"{which} epoch: val acc") == [
            f"{100 * m['history'][index]['val_acc']:.2f}%" for m in metrics
        ]
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_rejects_what_is_not_a_run(tmp_path):
    result = compress_cli("compare", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and "is this a run directory?" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_reproduce_seed_writes_a_report_with_the_published_column(tmp_path):
    published = {"ghostnet": {"Total params": "5.18 M"}, "mobilenetv3_large": {}}
    (tmp_path / "seed.json").write_text(json.dumps(published))
    result = compress_cli(
        "reproduce",
        "seed",
        "--published",
        "seed.json",
        "--dataset",
        "synthetic",
        "--epochs",
        "1",
        "--train-size",
        "128",
        "--test-size",
        "64",
        "--out",
        "report",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "report/report.md").read_text()
    header = "|  | ghostnet (measured) | ghostnet (seed) | mobilenetv3_large (measured) | "
    assert header in report
    (params,) = [line for line in report.splitlines() if line.startswith("| Total params |")]
    cells = [cell.strip() for cell in params.split("|")[2:-1]]
    assert cells[1] == "5.18 M" and cells[3] == "-"
    assert '"dataset": "synthetic"' in report and '"optimizer": "adam"' in report  # the seed's
    runs = sorted((tmp_path / "report/runs").iterdir())
    assert [r.name.split("-")[0] for r in runs] == ["ghostnet", "mobilenetv3_large"]
    assert (tmp_path / "report/curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("content", "message"),
    [("[1, 2]", "must hold a JSON object"), (None, "--published seed.json does not exist")],
)
def test_reproduce_seed_bad_published_file(tmp_path, content, message):
    if content is not None:
        (tmp_path / "seed.json").write_text(content)
    result = compress_cli("reproduce", "seed", "--published", "seed.json", cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "runs").exists()
