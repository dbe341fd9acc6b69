"""``compress study ablation``: exact counts of every grid point beside the paper's tables."""

import json

import pytest
from clitools import compress_cli
from test_backbones import EXACT_VGG_GRID

from studies.ablation import PAPER


def test_vgg16_grid_trains_every_point_with_exact_counts_beside_the_paper(tmp_path):
    result = compress_cli(
        "study",
        "ablation",
        "--backbone",
        "vgg16",
        "--s",
        "3",
        "--d",
        "1,3",
        "--train-size",
        "16",
        "--test-size",
        "16",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--out",
        "out",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "out/ablation-vgg16/ablation.json").read_text())
    assert [(r["s"], r["d"]) for r in rows] == [(None, None), (3, 1), (3, 3)]
    assert (rows[0]["params"], rows[0]["macs"]) == (14_987_722, 313_463_808)  # plain VGG-16
    for row in rows[1:]:
        assert (row["params"], row["macs"]) == EXACT_VGG_GRID[row["s"], row["d"]]
        assert 0 <= row["accuracy"] <= 1
        assert (tmp_path / row["run_dir"] / "metrics.json").exists()
    printed = {
        (r["s"], r["d"]): (r["paper_params_m"], r["paper_macs_m"], r["paper_top1_pct"])
        for r in rows
    }
    assert printed[3, 3] == PAPER["vgg16", 3, 3] and printed[3, 3][2] is not None
    assert printed[3, 1] == (None, None, None)  # the paper has no such point
    table = result.stdout
    params, macs = EXACT_VGG_GRID[3, 3]
    assert f"{params:,}" in table and f"{macs:,}" in table and f"{printed[3, 3][2]}%" in table
    csv = (tmp_path / "out/ablation-vgg16/ablation.csv").read_text().splitlines()
    assert csv[0].startswith("s,d,params,macs,accuracy,paper_params_m") and len(csv) == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--s", "1"], "s must be"),
        (["--d", "2"], "d must be"),
        (["--s", "two"], "expected ints separated by commas, got 'two'"),
        (["--backbone", "mobilenetv2"], "--backbone must be one of mobilenetv3_large, resnet110"),
        (["--epochs", "0"], "--epochs 0 trains nothing"),
    ],
)
def test_bad_ablation_input(tmp_path, args, message):
    result = compress_cli("study", "ablation", *args, "--out", "out", cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
