"""``compress compare`` and ``compress reproduce seed``: the seed's table, from real runs."""

import csv
import json
import shutil

import pytest
from clitools import compress_cli

from compress import runs
from compress.reproduce import BUNDLED, SEED_CAVEATS, read_published, write_seed_report
from compress.results import section_name
from compress.runner import RunOutcome, run
from compress.significance import decode_answers, interval, mcnemar

QUICK = {"dataset": "synthetic", "train_size": 128, "epochs": 2, "batch_size": 64, "input_size": 16}


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
        cells = row(f"{which} epoch: val acc")  # with its interval, which may wrap
        for cell, m in zip(cells, metrics, strict=True):
            assert cell.startswith(f"{100 * m['history'][index]['val_acc']:.2f}% [")
    first, second = (decode_answers(m["test_correct"]) for m in metrics)
    change = 100 * (second.mean() - first.mean())
    assert row("vs resnet20: paired test")[0] == "-"
    assert row("vs resnet20: paired test")[1].startswith(f"{change:+.2f} points")
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_rejects_what_is_not_a_run(tmp_path):
    result = compress_cli("compare", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and "is this a run directory?" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_reproduce_seed_writes_a_report_with_the_published_column(tmp_path):
    result = compress_cli(
        "reproduce",
        "seed",
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

    def params_cells(report: str) -> list[str]:
        (row,) = [line for line in report.splitlines() if line.startswith("| Total params |")]
        return [cell.strip() for cell in row.split("|")[2:-1]]

    bundled = json.loads(BUNDLED.read_text())  # the seed review's numbers, shipped
    assert (
        params_cells(report)[1::2]
        == [
            bundled["ghostnet"]["Total params"],
            bundled["mobilenetv3_large"]["Total params"],
        ]
        == ["4,526,152", "5,481,486"]
    )
    assert all(caveat in report for caveat in SEED_CAVEATS)
    assert '"dataset": "synthetic"' in report and '"optimizer": "adam"' in report  # the seed's
    run_dirs = sorted((tmp_path / "report/runs").iterdir())
    assert [r.name.split("-")[0] for r in run_dirs] == ["ghostnet", "mobilenetv3_large"]
    assert (tmp_path / "report/curves.png").read_bytes()[:4] == b"\x89PNG"
    with (tmp_path / "report/comparison.csv").open(newline="") as handle:
        table = list(csv.reader(handle))  # the same table, for `compress report`
    assert table[0][1:3] == ["ghostnet (measured)", "ghostnet (seed)"]
    (params,) = [row for row in table if row[0] == "Total params"]
    assert params[1:] == params_cells(report)

    # --published FILE overrides the bundled column
    (tmp_path / "seed.json").write_text(json.dumps({"ghostnet": {"Total params": "5.18 M"}}))
    outcomes = [RunOutcome(d, runs.read_json(d / runs.METRICS)) for d in run_dirs]
    published = read_published(str(tmp_path / "seed.json"))
    other = write_seed_report(tmp_path / "other", outcomes, published)
    assert params_cells(other.read_text())[1::2] == ["5.18 M", "-"]


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


def test_report_builds_the_results_page_from_runs(two_runs, tmp_path):
    source = two_runs[0].parent  # both runs: one section
    result = compress_cli(
        "report", "docs/results", str(source), "--hardware", "this CPU", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "docs/results.md").read_text()
    section = section_name(source)
    assert f"## {section}" in page and "- hardware: this CPU" in page
    for run_dir in two_runs:
        metrics = runs.read_json(run_dir / runs.METRICS)
        summary = runs.read_json(tmp_path / f"docs/results/runs/{section}/{run_dir.name}.json")
        assert summary["metrics"] == metrics  # the page rests on the committed summary
        row = f"| {metrics['label']} |"
        assert row in page and f"{100 * metrics['final_val_acc']:.2f}%" in page
    assert '"dataset": "synthetic"' in page and '"epochs": 2' in page
    csv = (tmp_path / f"docs/results/{section}.csv").read_text().splitlines()
    assert len(csv) == 3 and csv[0].startswith('"run","techniques","params"')
    assert (tmp_path / f"docs/results/{section}.png").read_bytes()[:4] == b"\x89PNG"


def test_report_shows_the_tables_and_figures_a_command_wrote_beside_its_runs(two_runs, tmp_path):
    source = tmp_path / "study"
    shutil.copytree(two_runs[0].parent, source / "trials")
    (source / "front.csv").write_text(
        "trial,technique,macs,top-1,run_dir\n3,ghost,4733440,0.61234,/elsewhere/run\n"
    )
    (source / "trials.csv").write_text("trial\n" + "".join(f"{i}\n" for i in range(21)))
    (source / "pareto.png").write_bytes(b"\x89PNG fake")
    result = compress_cli("report", "page", str(source), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "page.md").read_text()
    table = "| trial | technique | macs | top-1 |\n| --- | --- | --- | --- |\n"
    assert table + "| 3 | ghost | 4,733,440 | 0.61234 |" in page
    assert "/elsewhere" not in page  # where it ran: only the CSV has it
    assert "`trials.csv` ([CSV](page/study/trials.csv), 21 rows):" in page  # linked, not shown
    assert "| 20 |" not in page and "![pareto](page/study/pareto.png)" in page
    for name in ("trials.csv", "pareto.png"):
        assert (tmp_path / "page/study" / name).read_bytes() == (source / name).read_bytes()
    copy = (tmp_path / "page/study/front.csv").read_text()  # without this machine's paths
    assert copy == "trial,technique,macs,top-1\n3,ghost,4733440,0.61234\n"


def test_report_refuses_a_source_without_runs_and_writes_nothing(two_runs, tmp_path):
    (tmp_path / "empty").mkdir()
    result = compress_cli("report", "page", str(two_runs[0].parent), "empty", cwd=tmp_path)
    assert result.returncode == 2 and "empty holds no completed run" in result.stderr
    assert not (tmp_path / "page").exists() and not (tmp_path / "page.md").exists()


def test_a_section_of_trained_networks_reads_each_row_against_the_network_as_loaded(
    two_runs, tmp_path
):
    """Rows in folders of their own (a campaign's), the trained network loaded as it is
    (``--init``, no epoch) among them: each other row shows its change from it with
    McNemar's p on the same test images, and the images its training saw."""
    source = tmp_path / "trained"
    trained = str(two_runs[0])
    quick = {**QUICK, "test_size": 128, "curves": False}
    loaded = run(
        "baseline", source / "loaded", model="resnet20", init=trained, **{**quick, "epochs": 0}
    )
    tuned = run(
        "baseline", source / "tuned", model="resnet20", init=trained, **{**quick, "epochs": 1}
    )
    compress_cli("report", "page", str(source), cwd=tmp_path)
    lines = (tmp_path / "page.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| run |"))
    assert header.endswith("| change from the trained network (McNemar p) |")
    rows = {line.split(" | ")[0][2:]: line for line in lines if line.startswith("| ")}
    assert rows["loaded"].endswith("| 0 | 0.0 min | - |")
    first, second = (decode_answers(r.metrics["test_correct"]) for r in (loaded, tuned))
    test = mcnemar(second, first)
    change = 100 * (second.mean() - first.mean())
    assert rows["tuned"].endswith(f"| {change:+.2f} points (p = {test.p_value:.2g}) |")
    assert "| 128 |" in rows["tuned"]  # two batches of 64: the images one epoch saw
    top = interval(round(loaded.metrics["final_val_acc"] * 128), 128)
    assert f"| {top.text()} |" in rows["loaded"]


def test_a_page_keeps_its_earlier_sections_rebuilt_from_their_own_summaries(two_runs, tmp_path):
    first = tmp_path / "first"
    shutil.copytree(two_runs[0].parent, first)
    assert compress_cli("report", "page", str(first), cwd=tmp_path).returncode == 0
    before = (tmp_path / "page.md").read_text().split("## first", 1)[1]
    shutil.rmtree(first)  # the runs are gone: only the page's own records are left
    second = tmp_path / "second"
    shutil.copytree(two_runs[0].parent, second)
    again = compress_cli("report", "page", str(second), "--keep", "first", "--force", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    page = (tmp_path / "page.md").read_text()
    assert page.index("## second") < page.index("## first")
    assert page.split("## first", 1)[1] == before  # the same section, from its summaries
    missing = compress_cli("report", "page", str(second), "--keep", "third", "--force",
                           cwd=tmp_path)  # fmt: skip
    assert missing.returncode == 2 and "holds no run summaries" in missing.stderr


def test_runs_that_share_a_label_are_told_apart_by_their_options(tmp_path):
    from compress.results import FinishedRun, run_names

    def made(name, options):
        config = {"techniques": [{"name": "baseline", "options": {}},
                                 {"name": "distill", "options": options}]}  # fmt: skip
        return FinishedRun(tmp_path / name, config, {"label": "resnet20+distill"})

    found = [made("a", {"kind": "attention"}), made("b", {}), made("c", {}), made("d", {"x": 1})]
    names = run_names(found, tmp_path)
    assert names[0] == "resnet20+distill (baseline + distill(kind=attention))"
    assert names[1] == "resnet20+distill (baseline + distill) [b]"  # the same options: folders
    assert len(set(names)) == 4


def test_a_campaign_section_grows_over_sessions_from_its_summaries_and_new_runs(two_runs, tmp_path):
    """Rows finished in an earlier session are on the page (their runs are gone); rows
    finished now join them under the same section, each named by its row."""
    source = tmp_path / "trained"
    shutil.copytree(two_runs[0], source / "row-a" / two_runs[0].name)
    assert compress_cli("report", "page", str(source), cwd=tmp_path).returncode == 0
    shutil.rmtree(source)
    shutil.copytree(two_runs[1], source / "row-b" / two_runs[1].name)
    again = compress_cli(
        "report", "page", str(source), "--keep", "trained", "--force", cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr
    rows = [line.split(" | ")[0][2:] for line in (tmp_path / "page.md").read_text().splitlines()
            if line.startswith("| row-")]  # fmt: skip
    assert sorted(rows) == ["row-a", "row-b"]


def test_a_figure_too_crowded_to_draw_is_not_left_from_an_earlier_build(
    two_runs, tmp_path, monkeypatch
):
    """One run: its curves are drawn; two, over the figure's limit: the table says where
    the epochs are, and the earlier figure (one run of two) is gone, not shown stale."""
    from compress import results

    monkeypatch.setattr(results, "MAX_CURVES", 1)
    source = tmp_path / "trained"
    figure = tmp_path / "page" / "trained.png"
    shutil.copytree(two_runs[0], source / "row-a" / two_runs[0].name)
    results.build_page(tmp_path / "page.md", [source], "this CPU")
    assert figure.read_bytes()[:4] == b"\x89PNG"
    shutil.copytree(two_runs[1], source / "row-b" / two_runs[1].name)
    results.build_page(tmp_path / "page.md", [source], "this CPU")
    assert not figure.exists()
    assert (
        "each run's epochs are in its summary (2 runs trained)"
        in (tmp_path / "page.md").read_text()
    )
