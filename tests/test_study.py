"""Optuna studies: the search space, the Pareto front, failed trials, continuation."""

import io
import json
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from clitools import compress_cli, quick_study
from rich.console import Console

from compress.errors import UsageError
from compress.options import Options, option
from compress.techniques import Technique, register_technique
from compress.techniques.ghost import GhostConfig
from studies.objectives import OBJECTIVES
from studies.pareto import pareto_front
from studies.space import searchable, suggest
from studies.study import StudySpec, open_study, optimize, sampler_seed, trial_options


def test_brute_force_front():
    points = [(0.9, 100), (0.8, 50), (0.85, 120), (0.7, 50), (0.95, 300), (0.8, 60)]
    assert pareto_front(points, ["maximize", "minimize"]) == [0, 1, 4]
    assert pareto_front([(1, 1), (1, 1)], ["minimize", "minimize"]) == [0, 1]


def test_search_space_comes_from_the_config_declarations():
    assert searchable(GhostConfig) == ["width", "s", "d"]
    trial = optuna.trial.FixedTrial({"ghost.width": 0.5, "ghost.s": 3, "ghost.d": 5})
    assert suggest(trial, "ghost", GhostConfig) == {"width": 0.5, "s": 3, "d": 5}
    fixed = optuna.trial.FixedTrial({"ghost.width": 1.0, "ghost.s": 4, "ghost.d": 1})
    assert trial_options(fixed, "ghost", "vgg16") == {"s": 4, "d": 1, "backbone": "vgg16"}
    prune = optuna.trial.FixedTrial({"prune.ratio": 0.3})
    assert trial_options(prune, "prune", "resnet20") == {"ratio": 0.3, "model": "resnet20"}


@dataclass
class ExplodeConfig(Options):
    when: float = option(0.5, "unused", low=0, high=1, search=("float", 0.0, 1.0))


@register_technique("explode_for_test")
class Explode(Technique):
    stage = "post"
    config_cls = ExplodeConfig

    def post_train(self, model, config, context):
        raise RuntimeError("boom")


QUICK_FIXED = {
    "dataset": "synthetic",
    "train_size": 128,
    "test_size": 64,
    "epochs": 1,
    "batch_size": 64,
    "input_size": 16,  # a quarter of the work of 32x32: what is tested does not need it
}


def quick_spec(out, **changes) -> StudySpec:
    changes = {k: str(v) if k == "out" else v for k, v in changes.items()}
    """One prune trial on ResNet-20 over a synthetic epoch, changed where a test says."""
    values = {
        "techniques": ["prune"],
        "backbone": "resnet20",
        "objectives": ["accuracy", "macs"],
        "trials": 1,
        "out": str(out),
        "baselines": (),
        "fixed": QUICK_FIXED,
    }
    return StudySpec(**{**values, **changes})


def test_a_failing_trial_is_recorded_and_the_study_goes_on(tmp_path):
    spec = quick_spec(tmp_path, techniques=["explode_for_test", "prune"], trials=2)
    queue = open_study(spec)  # the failing trial first, then one that completes after it
    queue.enqueue_trial({"technique": "explode_for_test", "explode_for_test.when": 0.5})
    queue.enqueue_trial({"technique": "prune", "prune.ratio": 0.5})
    lines = Console(file=io.StringIO(), width=200)
    study = optimize(spec, Console(quiet=True), lines=lines)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed and all(t.user_attrs["error"] == "RuntimeError: boom" for t in failed)
    printed = lines.file.getvalue().splitlines()  # one line each, no traceback
    assert printed[0].startswith("trial 0 (1/2) explode_for_test(when=0.5): failed: ")
    assert printed[0].split("; ")[0].endswith("RuntimeError: boom") and len(printed) == 2


def test_study_from_the_cli_front_export_continue_and_show(tmp_path):
    args = [*quick_study(), "--epochs", "1"]
    first = compress_cli(*args, "--trials", "3", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    rows = json.loads((tmp_path / "out/pareto/trials.json").read_text())
    done = [r for r in rows if r["state"] == "COMPLETE"]
    assert len(rows) == 3 and len(done) >= 2
    lines = [line for line in first.stderr.splitlines() if line.startswith("trial ")]
    assert [line.split(" (")[1].split(")")[0] for line in lines] == ["1/3", "2/3", "3/3"]
    assert "Trial 0 finished with values" not in first.stderr  # Optuna's raw line is gone
    front = pareto_front([(r["accuracy"], r["macs"]) for r in done], ["maximize", "minimize"])
    table = first.stdout.split("Pareto front of", 1)[1]
    listed = sorted(int(line.split("│")[1]) for line in table.splitlines() if line.startswith("│"))
    assert listed == sorted(done[i]["trial"] for i in front)
    assert (tmp_path / "out/pareto/pareto.png").read_bytes()[:4] == b"\x89PNG"
    trials = [path.parent for path in (tmp_path / "out/pareto/trials").glob("*/metrics.json")]
    assert len(trials) == 3 and not [p for d in trials for p in d.glob("*.png")]  # no curves
    assert (
        "trial,state,technique,options,accuracy,macs"
        in (tmp_path / "out/pareto/trials.csv").read_text()
    )
    header, *printed = (tmp_path / "out/pareto/front.csv").read_text().splitlines()
    assert header == "trial,technique,options,top-1 (test split),MACs,on the front"
    assert sorted(int(line.split(",")[0]) for line in printed) == listed  # the table, as shown

    more = compress_cli(*args, "--trials", "1", cwd=tmp_path)
    assert more.returncode == 0, more.stderr
    rows = json.loads((tmp_path / "out/pareto/trials.json").read_text())
    assert [r["trial"] for r in rows] == [0, 1, 2, 3]  # continued, nothing lost or repeated

    (tmp_path / "out/pareto/pareto.png").unlink()
    shown = compress_cli("study", "show", "pareto", "--out", "out", cwd=tmp_path)
    assert shown.returncode == 0 and (tmp_path / "out/pareto/pareto.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--objectives", "accuracy,size"], "--objectives must be one of accuracy, macs"),
        (["--objectives", "accuracy"], "two or three different objectives"),
        (["--techniques", "ghost,prun"], "unknown technique 'prun'"),
        (["--backbone", "resnet21"], "unknown model 'resnet21'"),
        (  # trials would time one another's training
            ["--objectives", "accuracy,ort_latency", "--concurrent", "2"],
            "--objectives ort_latency times each trial's network",
        ),
        (["--objectives", "accuracy,latency", "--workers", "2"], "give --workers 1"),
    ],
)
def test_bad_study_input(tmp_path, args, message):
    result = compress_cli("study", "pareto", *args, "--out", "out", cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_timm_baselines_are_trained_once_and_marked(tmp_path):
    import timm
    import torch

    from compress.measure import count_macs

    spec = quick_spec(
        tmp_path, objectives=["accuracy", "params"], baselines=["timm:mobilenetv3_small_050"]
    )
    study = optimize(spec, Console(quiet=True))
    (point,) = study.user_attrs["baselines"]
    model = timm.create_model("mobilenetv3_small_050", num_classes=4).eval()
    assert point["model"] == "timm:mobilenetv3_small_050"
    assert point["macs"] == count_macs(model, torch.randn(1, 3, 16, 16))  # at the input size
    assert point["params"] == sum(p.numel() for p in model.parameters())
    optimize(spec, Console(quiet=True))  # continuing the study does not train it again
    other = quick_spec(tmp_path, study_name="other", baselines=["timm:mobilenetv3_small_050"])
    optimize(other, Console(quiet=True))  # nor does another study with the same recipe
    assert len(list((tmp_path / "cache").glob("timm-mobilenetv3*"))) == 1

    from studies.study import report

    report(study, tmp_path / "pareto", Console(quiet=True))
    for plot in ("pareto.png", "pareto-bops.png"):  # accuracy vs params, and vs BOPs
        assert (tmp_path / "pareto" / plot).read_bytes()[:4] == b"\x89PNG"
    lines = (tmp_path / "pareto/front.csv").read_text().splitlines()
    (reference,) = [line for line in lines if line.startswith("reference,")]
    assert reference.startswith("reference,timm:mobilenetv3_small_050,,")
    cells = [OBJECTIVES[name].cell(point[name], point) for name in ("accuracy", "params")]
    assert ",".join(cells) in reference


def test_a_study_of_a_trained_backbone_fixes_options_and_shows_its_control(tmp_path):
    """``--init`` for every trial: post-training trials prune the trained weights
    themselves (no shared backbone trained first), ``--fix`` sets options every trial
    takes as given, and the backbone as loaded and fine-tuned are reference points."""
    from compress import run

    trained = run("baseline", tmp_path / "base", model="resnet20", curves=False, **QUICK_FIXED)
    spec = quick_spec(
        tmp_path,
        techniques=["prune"],
        baselines=[],
        trials=1,
        fix=("finetune_epochs=0", "importance=l2"),
        fixed={**QUICK_FIXED, "init": str(trained.run_dir), "precise_bn": 64},
    )
    study = optimize(spec, Console(quiet=True))
    (trial,) = study.trials
    assert set(trial.params) == {"technique", "prune.ratio"}  # the fixed ones not searched
    config = json.loads((Path(trial.user_attrs["metrics"]["run_dir"]) / "config.json").read_text())
    options = config["techniques"][1]["options"]
    assert (options["finetune_epochs"], options["importance"]) == (0, "l2")
    assert config["train"]["init"] == str(trained.run_dir) and config["train"]["epochs"] == 0
    names = [point["model"] for point in study.user_attrs["baselines"]]
    assert names == ["resnet20 (trained)", "resnet20 (fine-tuned)"]
    loaded = study.user_attrs["baselines"][0]
    assert loaded["accuracy"] == trained.metrics["final_val_acc"]  # as it was, not retrained


@pytest.mark.parametrize(
    ("fix", "message"),
    [(("ratio",), "give NAME=VALUE"), (("s=2",), "an option of the study's techniques"),
     (("finetune_epochs=two",), "--finetune-epochs must be int")],
)  # fmt: skip
def test_bad_fixed_options_are_refused(tmp_path, fix, message):
    with pytest.raises(UsageError, match=message):
        quick_spec(tmp_path, techniques=["prune"], fix=fix)


def test_worker_specs_share_the_trials_seeds_and_gpus(tmp_path, monkeypatch):
    import torch

    from studies.study import worker_specs

    spec = quick_spec(tmp_path, trials=7, workers=3, sampler_seed=5, fixed={})
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    specs = worker_specs(spec)
    assert [s.trials for s in specs] == [3, 2, 2] and [s.worker_index for s in specs] == [0, 1, 2]
    seeds = [sampler_seed(s, 0) for s in specs]
    assert len(set(seeds)) == 3 and seeds == [sampler_seed(s, 0) for s in worker_specs(spec)]
    assert [s.fixed["device"] for s in specs] == ["cuda:0", "cuda:1", "cuda:0"]
    assert {s.storage for s in specs} == {f"journal:{(tmp_path / 'pareto.journal').resolve()}"}
    assert all(s.workers == 1 for s in specs)
    cpu = worker_specs(quick_spec(tmp_path, trials=2, workers=3, fixed={"device": "cpu"}))
    assert [(s.trials, s.fixed) for s in cpu] == [(1, {"device": "cpu"}), (1, {"device": "cpu"})]


def test_a_prune_study_trains_its_backbone_once(tmp_path):
    spec = quick_spec(tmp_path, trials=2, fixed={**QUICK_FIXED, "epochs": 2})
    study = optimize(spec, Console(quiet=True))
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 2
    (backbone,) = (tmp_path / "cache").glob("resnet20-*")
    trained = json.loads((backbone / "metrics.json").read_text())
    assert [r["phase"] for r in trained["history"]] == ["train", "train"]
    for trial in study.trials:
        run_dir = Path(trial.user_attrs["metrics"]["run_dir"])
        config = json.loads((run_dir / "config.json").read_text())
        assert config["init_from"]["run_dir"] == str(backbone)  # started from it ...
        history = json.loads((run_dir / "metrics.json").read_text())["history"]
        assert {r["phase"] for r in history} == {"finetune"}  # ... and only fine-tuned


def options_drawn(study):
    return [tuple(sorted(t.params.items())) for t in study.trials]


@pytest.mark.parametrize("seed", [None, 3])
def test_a_continued_study_draws_new_trials(tmp_path, seed):
    spec = quick_spec(tmp_path, sampler_seed=seed)
    optimize(spec, Console(quiet=True))
    study = optimize(spec, Console(quiet=True))  # the same command again
    assert len(set(options_drawn(study))) == 2
    if seed is not None:  # reproducible: a fresh study with the same seed draws the same
        again = optimize(quick_spec(tmp_path / "again", sampler_seed=seed), Console(quiet=True))
        assert options_drawn(again) == options_drawn(study)[:1]
