"""Your own images: ``--dataset folder`` on small generated folders."""

import json

import numpy as np
import pytest
from clitools import compress_cli
from PIL import Image

COLOURS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "eel": (40, 40, 200)}
QUICK = ["--epochs", "1", "--batch-size", "4", "--image-size", "16", "--precise-bn", "8"]


def make_folder(root, per_class=6, split=False):
    """Class folders of noisy single-colour images, of several sizes and formats."""
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        for index in range(per_class):
            where = root / ("val" if index < 2 else "train") / name if split else root / name
            where.mkdir(parents=True, exist_ok=True)
            size = (24 + 4 * index, 20 + 3 * index)
            pixels = np.clip(rng.normal(colour, 30, (*size[::-1], 3)), 0, 255).astype(np.uint8)
            suffix = (".png", ".jpg", ".webp")[index % 3]
            Image.fromarray(pixels).save(where / f"{name}{index}{suffix}")
    return root


def test_a_folder_trains_exports_and_reports_with_its_classes(tmp_path):
    data = make_folder(tmp_path / "pets")
    broken = data / "dog" / "broken.jpg"
    broken.write_bytes((data / "dog" / "dog1.jpg").read_bytes()[:40])  # truncated
    args = ["--model", "resnet20", "--dataset", "folder", "--data-dir", data, *QUICK]
    result = compress_cli("run", "baseline", *args, "--out", tmp_path / "out", "--json")
    assert result.returncode == 0, result.stderr
    assert "1 images could not be read and are left out" in result.stderr
    run_dir = tmp_path / "out" / json.loads(result.stdout)["run_dir"].split("out/")[-1]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["input"]["classes"] == ["cat", "dog", "eel"]
    assert config["input"]["skipped_images"] == 1 and config["input"]["image_size"] == 16
    assert compress_cli("export", run_dir, "--repeats", "0").returncode == 0
    import onnx

    meta = {p.key: json.loads(p.value) for p in onnx.load(run_dir / "model.onnx").metadata_props}
    assert meta["classes"] == ["cat", "dog", "eel"] and len(meta["mean"]) == 3
    page = compress_cli("report", tmp_path / "page", tmp_path / "out")
    assert page.returncode == 0 and "- classes: cat, dog, eel" in (tmp_path / "page.md").read_text()


def test_a_folder_with_its_own_split_keeps_it(tmp_path):
    from compress.data import DataConfig, load_data

    data = load_data(DataConfig(dataset="folder", data_dir=str(make_folder(tmp_path, split=True)),
                                image_size=16))  # fmt: skip
    assert (len(data.train_x), len(data.test_x)) == (12, 6)  # 4 and 2 of each class
    assert data.classes == ("cat", "dog", "eel") and data.train_x.shape[1:] == (3, 16, 16)
    one = load_data(DataConfig(dataset="folder", data_dir=str(make_folder(tmp_path / "one")),
                               image_size=16, val_fraction=0.5))  # fmt: skip
    assert (len(one.train_x), len(one.test_x)) == (9, 9)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("empty", "holds no class folders"),
        ("empty_class", "holds no image"),
        ("missing_split", "has a split but no val/ folder"),
        ("no_dir", "give --data-dir DIR"),
    ],
)
def test_folders_that_cannot_be_a_data_set_end_in_one_line(tmp_path, damage, message):
    data = tmp_path / "data"
    data.mkdir()
    extra = []
    if damage == "empty_class":
        make_folder(data)
        (data / "fox").mkdir()
    elif damage == "missing_split":
        make_folder(data, split=True)
        for path in sorted((data / "val").rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        (data / "val").rmdir()
    args = ["--dataset", "folder", *([] if damage == "no_dir" else ["--data-dir", data])]
    result = compress_cli("run", "baseline", *args, *QUICK, *extra, "--out", tmp_path / "out")
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_an_imagenet_network_is_fine_tuned_on_a_folder_then_compressed(tmp_path):
    """timm's pretrained weights, offline: a file saved from a timm model (1000 classes)
    starts a run on three classes (a new classifier), with timm's normalisation; the
    fine-tuned run is then pruned."""
    import timm
    import torch

    from compress import load

    torch.save(timm.create_model("resnet10t").state_dict(), tmp_path / "imagenet.pth")
    data = make_folder(tmp_path / "pets")
    common = ["--model", "timm:resnet10t", "--dataset", "folder", "--data-dir", data, *QUICK]
    common += ["--normalize", "timm:resnet10t"]
    start = ["--init", tmp_path / "imagenet.pth", "--out", tmp_path / "out", "--json"]
    tuned = compress_cli("run", "baseline", *common, *start)
    assert tuned.returncode == 0, tuned.stderr
    run_dir = tmp_path / "out" / json.loads(tuned.stdout)["run_dir"].split("out/")[-1]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["init_from"]["new"] == ["fc.weight", "fc.bias"]  # a classifier for 3 classes
    assert config["input"]["mean"] == [0.485, 0.456, 0.406]  # timm's pretrained_cfg
    args = ["--init", run_dir, "--epochs", "0", "--ratio", "0.3", "--finetune-epochs", "0"]
    pruned = compress_cli("run", "prune", *common, *args, "--out", tmp_path / "then", "--json")
    assert pruned.returncode == 0, pruned.stderr
    assert json.loads(pruned.stdout)["macs_fraction"] < 0.8
    # the ImageNet evaluation preset: the weights tested as they are, streamed, at timm's crop
    evaluate = ["--model", "timm:resnet10t", "--data-dir", data, "--normalize", "timm:resnet10t",
                "--preset", "imagenet-eval", "--image-size", "16", "--memory-budget-mb", "0",
                "--batch-size", "4"]  # fmt: skip
    evaluated = compress_cli("run", "baseline", *evaluate, "--init", run_dir,
                             "--out", tmp_path / "eval", "--json")  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    eval_dir = tmp_path / "eval" / json.loads(evaluated.stdout)["run_dir"].split("eval/")[-1]
    config = json.loads((eval_dir / "config.json").read_text())
    assert config["train"]["epochs"] == 0 and config["train"]["precise_bn"] == 0
    assert config["input"]["streamed"] and config["input"]["interpolation"] == "bicubic"
    tuned_weights, tested = load(run_dir).state_dict(), load(eval_dir).state_dict()
    assert all(torch.equal(tuned_weights[k], tested[k]) for k in tuned_weights)


def test_a_folder_over_the_memory_budget_streams_and_is_recorded(tmp_path):
    """Over --memory-budget-mb (0: always) the images are decoded in workers while
    training: the run trains, tests and exports, a file that is no image is skipped at
    listing, and the record says the data streamed."""
    data = make_folder(tmp_path / "pets")
    (data / "eel" / "notes.jpg").write_text("not an image")
    args = ["--model", "resnet20", "--dataset", "folder", "--data-dir", data, *QUICK]
    result = compress_cli(
        "run", "baseline", *args, "--memory-budget-mb", "0", "--out", tmp_path / "out", "--json"
    )
    assert result.returncode == 0, result.stderr
    assert "streamed from disk" in result.stderr
    assert "1 images could not be read and are left out" in result.stderr
    run_dir = tmp_path / "out" / json.loads(result.stdout)["run_dir"].split("out/")[-1]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["input"]["streamed"] is True and config["input"]["skipped_images"] == 1
    assert (config["input"]["crop_fraction"], config["input"]["interpolation"]) == (
        0.875,
        "bilinear",
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["history"][0]["images"] == 16  # 16 readable (the note is held out) by 4
    exported = compress_cli("export", run_dir, "--repeats", "0")
    assert exported.returncode == 0, exported.stderr  # the ONNX check streams the test split
    assert f"{100 * metrics['final_val_acc']:.2f}%" in exported.stdout


def test_streamed_batches_do_not_depend_on_the_workers_and_evaluate_as_timm_does(tmp_path):
    """Each image's crop and flip come from the epoch's seed and its index: the same
    batches from the main process and from two workers. Evaluation is a resize to
    size / 0.875 and the centre crop, timm's default, within resampling's rounding."""
    import timm.data
    import torch
    from PIL import Image

    from compress.data import loader
    from compress.streaming import ImageFiles

    data = make_folder(tmp_path / "pets")
    paths = tuple(sorted(str(p) for p in data.rglob("*.*")))
    labels = torch.arange(len(paths)) % 3
    cpu = torch.device("cpu")

    def epoch(workers: int) -> list[torch.Tensor]:
        files = ImageFiles(paths, 16, workers)
        batches = loader(files, labels, 4, cpu, True, torch.Generator().manual_seed(5))
        return [torch.cat([x.flatten(), y]) for x, y in batches]

    alone, shared = epoch(0), epoch(2)
    assert len(alone) == 4 and all(torch.equal(a, b) for a, b in zip(alone, shared, strict=True))
    timm_eval = timm.data.create_transform(16, crop_pct=0.875, interpolation="bilinear")
    (ours, _), *_ = loader(ImageFiles(paths[:2], 16, 0), labels[:2], 2, cpu, False)
    for image, path in zip(ours, paths[:2], strict=True):
        theirs = timm_eval(Image.open(path).convert("RGB"))  # normalised with ImageNet's
        mean, std = torch.tensor((0.485, 0.456, 0.406)), torch.tensor((0.229, 0.224, 0.225))
        pixels = (theirs * std[:, None, None] + mean[:, None, None]) * 255
        assert (image.float() - pixels).abs().mean() < 3  # of 255


def test_a_streamed_image_that_cannot_be_decoded_ends_the_run_naming_it(tmp_path):
    data = make_folder(tmp_path / "pets")
    whole = (data / "cat" / "cat1.jpg").read_bytes()
    (data / "cat" / "cat1.jpg").write_bytes(whole[:-40])  # its header whole, its pixels not
    args = ["--model", "resnet20", "--dataset", "folder", "--data-dir", data, *QUICK]
    result = compress_cli("run", "baseline", *args, "--memory-budget-mb", "0", "--out", tmp_path)
    assert result.returncode == 2, result.stderr
    assert "cannot decode image" in result.stderr and "cat1.jpg" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_streamed_folder_takes_a_timm_models_evaluation_crop_and_resampling(tmp_path):
    from compress.data import DataConfig, load_data

    folder = str(make_folder(tmp_path))
    for normalize, resampling in (
        ("timm:mobilenetv3_large_100", "bicubic"),
        ("dataset", "bilinear"),
    ):
        data = load_data(DataConfig(dataset="folder", data_dir=folder, image_size=16,
                                    memory_budget_mb=0, normalize=normalize))  # fmt: skip
        assert (data.test_x.interpolation, data.test_x.crop_fraction) == (resampling, 0.875)
        assert data.train_x.interpolation == resampling and len(data.test_x) == 3
