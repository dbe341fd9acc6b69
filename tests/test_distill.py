import json

import pytest
import torch
from clitools import compress_cli
from rich.console import Console

from compress.data import make_synthetic
from compress.engine import TrainConfig
from compress.errors import UsageError
from compress.measure import count_params
from compress.registry import create_model
from compress.techniques import RunContext
from compress.techniques.distill import (
    Distill,
    DistillConfig,
    attention_loss,
    kd_loss,
    last_feature_module,
)


def test_kd_loss_gradient_matches_finite_differences():
    torch.manual_seed(0)
    student = torch.randn(4, 5, dtype=torch.double, requires_grad=True)
    teacher = torch.randn(4, 5, dtype=torch.double)
    assert torch.autograd.gradcheck(lambda s: kd_loss(s, teacher, 3.0), (student,))


def test_kd_loss_values():
    logits = torch.randn(8, 10)
    assert kd_loss(logits, logits, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    # T^2 scaling: at T = 1 the term is the plain KL divergence.
    teacher = torch.randn(8, 10)
    kl = torch.nn.functional.kl_div(
        logits.log_softmax(1), teacher.log_softmax(1), reduction="batchmean", log_target=True
    )
    assert kd_loss(logits, teacher, 1.0).item() == pytest.approx(kl.item(), rel=1e-5)
    assert kd_loss(logits, teacher, 4.0).item() > 0


def test_attention_loss_is_zero_for_equal_maps_and_resizes():
    features = torch.randn(2, 16, 8, 8)
    assert attention_loss(features, features).item() == pytest.approx(0.0, abs=1e-9)
    assert attention_loss(torch.randn(2, 4, 4, 4), features).item() > 0


def test_feature_hint_adapter_trains_with_the_student_and_is_dropped_after():
    data = make_synthetic(64, 16)
    quiet = Console(quiet=True)
    context = RunContext(data, TrainConfig(epochs=1, batch_size=16, device="cpu"), quiet)
    student = create_model("resnet20", num_classes=4)
    params = count_params(student)[0]
    technique = Distill()
    config = DistillConfig(teacher="resnet20", kind="feature", teacher_epochs=1)
    term = technique.loss_term(student, config, context)
    assert hasattr(student, "kd_adapter") and student.kd_adapter.out_channels == 64
    inputs = torch.randn(2, 3, 32, 32)
    student.train()(inputs)
    loss = term(inputs, None, None)
    loss.backward()
    assert student.kd_adapter.weight.grad is not None
    technique.after_training(student, config, context)
    assert count_params(student)[0] == params
    assert last_feature_module(student, torch.zeros(1, 3, 32, 32)) == "layer3"


def test_ghost_student_distilled_from_a_teacher_run(tmp_path):
    quick = ["--dataset", "synthetic", "--batch-size", "32", "--no-augment", "--json"]
    teacher = compress_cli(
        "run", "baseline", "--model", "resnet20", "--epochs", "2", *quick, cwd=tmp_path
    )
    assert teacher.returncode == 0, teacher.stderr
    teacher_dir = json.loads(teacher.stdout)["run_dir"]
    student = compress_cli(
        "run",
        "ghost+distill",
        "--backbone",
        "resnet20",
        "--teacher",
        teacher_dir,
        "--epochs",
        "2",
        *quick,
        cwd=tmp_path,
    )
    assert student.returncode == 0, student.stderr
    metrics = json.loads(student.stdout)
    assert metrics["technique"] == "ghost+distill" and metrics["final_val_acc"] > 0.5
    missing = compress_cli("run", "distill", "--teacher", "runs/nothing-here", cwd=tmp_path)
    assert missing.returncode == 2 and "teacher run directory" in missing.stderr


def test_bad_distill_options():
    with pytest.raises(UsageError, match="--kind must be one of"):
        DistillConfig(kind="logits")
    with pytest.raises(UsageError, match="--temperature must be > 0"):
        DistillConfig(temperature=0.0)
