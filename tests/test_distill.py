import json

import pytest
import torch
from clitools import compress_cli
from rich.console import Console

from compress.data import make_synthetic
from compress.engine import TrainConfig, train
from compress.errors import UsageError
from compress.measure import count_params
from compress.registry import create_model
from compress.techniques import RunContext
from compress.techniques.distill import (
    Distill,
    DistillConfig,
    attention_loss,
    kd_loss,
    load_teacher,
    stage_outputs,
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


def context_on(data):
    """A run's context whose teachers are trained on the spot (seeded: the same each time)."""
    quiet = Console(quiet=True)

    def trained_alone(name, recipe):
        torch.manual_seed(recipe.seed)
        model = create_model(name, num_classes=data.num_classes)
        train(model, data, recipe, console=quiet)
        return model

    recipe = TrainConfig(epochs=1, batch_size=16, device="cpu")
    return RunContext(data, recipe, quiet, trained_alone=trained_alone)


def test_feature_hint_adapters_train_with_the_student_and_are_dropped_after():
    context = context_on(make_synthetic(64, 16))
    student = create_model("resnet20", num_classes=4)
    params = count_params(student)[0]
    technique = Distill()
    config = DistillConfig(teacher="resnet20", kind="feature", teacher_epochs=1)
    term = technique.loss_term(student, config, context)
    # One hint per stage, each through its own 1x1 adapter.
    assert [a.out_channels for a in student.kd_adapters] == [16, 32, 64]
    inputs = torch.randn(2, 3, 32, 32)
    student.train()(inputs)
    task = torch.tensor(2.0)
    loss = term(inputs, None, None, task)
    assert loss.item() > task.item()
    loss.backward()
    assert all(adapter.weight.grad is not None for adapter in student.kd_adapters)
    term.release(student)
    assert count_params(student)[0] == params
    assert stage_outputs(student, torch.zeros(1, 3, 32, 32)) == ["layer1", "layer2", "layer3"]


def test_output_kd_is_hintons_weighted_sum():
    context = context_on(make_synthetic(64, 16))
    config = DistillConfig(teacher="resnet20", alpha=0.3, temperature=2.0, teacher_epochs=1)
    term = Distill().loss_term(create_model("resnet20", num_classes=4), config, context)
    teacher = load_teacher(config, context).eval()  # trained again: the same weights
    inputs, logits = torch.randn(4, 3, 32, 32), torch.randn(4, 4)
    task = torch.tensor(1.7)
    with torch.no_grad():
        expected = 0.7 * task + 0.3 * kd_loss(logits, teacher(inputs), 2.0)
    torch.testing.assert_close(term(inputs, logits, None, task), expected)


def stage_features(model, inputs):
    outputs = []
    stages = [model.layer1, model.layer2, model.layer3]
    handles = [
        stage.register_forward_hook(lambda *args: outputs.append(args[2])) for stage in stages
    ]
    with torch.no_grad():
        model.eval()(inputs)
    for handle in handles:
        handle.remove()
    return outputs


def normalized_attention(features):
    q = features.pow(2).mean(1).flatten(1)
    return q / q.norm(dim=1, keepdim=True)


def test_attention_transfer_is_beta_half_the_sum_over_stage_pairs():
    """Zagoruyko & Komodakis: beta/2 * sum_j mean((Q_s/|Q_s| - Q_t/|Q_t|)^2), beta = 1000."""
    torch.manual_seed(0)
    context = context_on(make_synthetic(64, 16))
    student = create_model("resnet20", num_classes=4)
    config = DistillConfig(teacher="resnet56", kind="attention", teacher_epochs=1)
    assert config.beta == 1000.0
    term = Distill().loss_term(student, config, context)
    teacher = load_teacher(config, context)
    inputs = torch.randn(4, 3, 32, 32)
    pairs = zip(stage_features(student, inputs), stage_features(teacher, inputs), strict=True)
    expected = 500 * sum(
        (normalized_attention(s) - normalized_attention(t)).pow(2).mean() for s, t in pairs
    )
    with torch.no_grad():
        student.eval()(inputs)
        total = term(inputs, None, None, torch.tensor(0.0))
    torch.testing.assert_close(total, expected)
    assert 0.1 < total.item() < 100  # the order of a cross-entropy, not 0.003


def test_ghost_student_distilled_from_a_teacher_run(tmp_path):
    quick = ["--dataset", "synthetic", "--batch-size", "32", "--no-augment", "--json"]
    quick += ["--train-size", "256", "--input-size", "16"]
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
    with pytest.raises(UsageError, match="--alpha must be <= 1"):
        DistillConfig(alpha=1.5)
    with pytest.raises(UsageError, match="paired one to one"):
        DistillConfig(student_layer="layer2,layer3", teacher_layer="layer3")
