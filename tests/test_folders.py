"""A user's own image folder: any format, size and split layout is read as it is, named classes
reach predict.py, and a folder that holds anything but MNIST is never written into."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image, ImageDraw

from mnist99.data.datamodule import ImageFolderDataModule
from mnist99.errors import ConfigError, DataError

from conftest import run_in_process, write_png_tree

# Three classes told apart by colour and shape, so that a small CNN learns them in a few epochs.
CLASSES = {"apple": ((200, 30, 30), "ellipse"), "leaf": ((40, 170, 40), "bar"), "sky": ((40, 80, 220), "rectangle")}
QUICK = ("trainer.max_epochs=4", "trainer.enable_progress_bar=false", "logger=csv", "data.batch_size=16")


def picture(name: str, rng: np.random.Generator) -> Image.Image:
    """A colour picture of one class at a random size (some not square) on a noisy background."""
    w, h = (int(v) for v in rng.integers(20, 72, size=2))
    background = rng.integers(90, 160, size=(h, w, 3), dtype=np.uint8)
    img = Image.fromarray(background, mode="RGB")
    colour, shape = CLASSES[name]
    x0, y0 = int(rng.integers(0, w // 4 + 1)), int(rng.integers(0, h // 4 + 1))
    box = (x0, y0, x0 + w // 2 + 2, y0 + h // 2 + 2) if shape != "bar" else (x0, 0, x0 + max(3, w // 5), h - 1)
    getattr(ImageDraw.Draw(img), "rectangle" if shape == "bar" else shape)(box, fill=colour)
    return img


def colour_folder(root: Path, splits=("train", "valid"), n=(24, 8), seed=0) -> Path:
    """<root>/<split>/<word class>/*: mostly JPEGs of mixed sizes, one PNG and one BMP per class."""
    rng = np.random.default_rng(seed)
    for split, count in zip(splits, n):
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                suffix = {0: "png", 1: "bmp"}.get(i, "jpg")
                picture(name, rng).save(folder / f"{name}_{i:03d}.{suffix}")
    return root


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder below root, with the SHA-256 of each file's bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return colour_folder(tmp_path_factory.mktemp("user") / "fruit")


def test_every_layout_is_found_by_name(tmp_path):
    for train, test in (("training", "testing"), ("train", "test"), ("train", "valid"), ("train", "val")):
        root = colour_folder(tmp_path / f"{train}-{test}", splits=(train, test), n=(3, 2))
        dm = ImageFolderDataModule(root, build_mnist=False, val_size=0, channels=3, mean=None, std=None)
        dm.prepare_data()
        dm.setup()
        assert dm.splits == (root / train, root / test) and dm.classes == ("apple", "leaf", "sky")
        assert dm.data_train.images.shape == (9, 3, 28, 28) and len(dm.data_test) == 6
    named = colour_folder(tmp_path / "named", splits=("fit", "holdout"), n=(3, 2))
    dm = ImageFolderDataModule(named, build_mnist=False, train_dir="fit", test_dir="holdout", val_size=0)
    dm.setup()
    assert dm.splits == (named / "fit", named / "holdout") and dm.data_train.images.shape == (9, 1, 28, 28)
    with pytest.raises(ConfigError, match="data.test_dir=nothing"):
        ImageFolderDataModule(named, build_mnist=False, train_dir="fit", test_dir="nothing").setup()


def test_colour_jpegs_of_mixed_sizes_train_and_predict_names_the_classes(photos, tmp_path):
    """The user's folder of the issue: colour JPEGs (and a PNG and a BMP) of mixed sizes, classes
    named by words, train/ + valid/. Only data=folder and data.data_dir name the data."""
    before = snapshot(photos)
    proc = run_in_process("train", "model=cnn", "data=folder", f"data.data_dir={photos}", *QUICK,
                          f"paths.log_dir={tmp_path / 'logs'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert snapshot(photos) == before  # not a byte written into the user's folder
    run_dir = next((tmp_path / "logs" / "runs").iterdir())
    record = yaml.safe_load((run_dir / "run.yaml").read_text())
    assert record["metrics"]["test/acc"] >= 0.9, record["metrics"]  # chance is 1/3
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"]["num_classes"] == 3 and config["model"]["in_channels"] == 3  # sized from the data
    assert "72 train" in proc.stdout and "resized" in proc.stdout

    valid = sorted((photos / "valid").rglob("*.jpg"))
    predicted = run_in_process("predict", f"ckpt_path={run_dir}", f"inputs={','.join(map(str, valid))}")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    answers = {line.split()[0]: line.split()[1] for line in predicted.stdout.splitlines() if line.strip().endswith(tuple("0123456789"))}
    right = sum(answers[str(p)] == p.parent.name for p in valid)
    assert set(answers.values()) <= set(CLASSES) and right >= 0.9 * len(valid), predicted.stdout
    # a checkpoint copied alone holds the class names and the images' own mean and std
    lone = tmp_path / "lone.ckpt"
    shutil.copy(run_dir / "checkpoints" / "last.ckpt", lone)
    alone = run_in_process("predict", f"ckpt_path={lone}", f"inputs={','.join(map(str, valid))}")
    assert alone.returncode == 0 and alone.stdout == predicted.stdout, alone.stderr[-3000:]

    evaluated = run_in_process("eval", f"ckpt_path={run_dir}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = yaml.safe_load(next((run_dir.parent.parent / "evals").glob("*/eval.yaml")).read_text())  # beside runs/
    assert set(report["per_class_acc"]) == set(CLASSES) and report["test/acc"] == record["metrics"]["test/acc"]


def test_a_folder_read_as_the_users_data_is_left_untouched(photos, tmp_path):
    """Without data=folder too: a folder with splits is the user's data, not a place to build MNIST."""
    before = snapshot(photos)
    proc = run_in_process("train", "model=linear", f"data.data_dir={photos}", "data.val_size=0", "data.channels=3",
                          "model.in_channels=3", "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "logger=csv",
                          f"paths.log_dir={tmp_path / 'logs'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "3 classes" in proc.stdout and snapshot(photos) == before


def test_a_folder_holding_anything_else_is_refused_and_never_written(tmp_path):
    other = tmp_path / "holiday"
    (other / "photos").mkdir(parents=True)
    picture("sky", np.random.default_rng(0)).save(other / "photos" / "beach.jpg")
    (other / "notes.txt").write_text("not a dataset")
    before = snapshot(other)
    for extra in ((), ("data=folder",)):
        proc = run_in_process("train", f"data.data_dir={other}", *extra, "trainer.max_epochs=1", f"paths.log_dir={tmp_path / 'logs'}")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        for words in ("photos/ (1 entry)", "notes.txt", "train/ + valid/", "one sub-folder of images per class"):
            assert words in proc.stderr, proc.stderr
        assert snapshot(other) == before
    assert "never writes into one that holds anything else" in run_in_process(
        "train", f"data.data_dir={other}", f"paths.log_dir={tmp_path / 'logs'}").stderr


def test_mnist_is_built_only_in_a_missing_or_empty_folder(tmp_path, monkeypatch):
    import mnist99.data.prepare as prepare

    built = []
    monkeypatch.setattr(prepare, "prepare_mnist_png", lambda d, **kw: built.append(d) or write_png_tree(d, 2, 1))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".gitkeep").write_text("")
    for folder in (empty, tmp_path / "missing"):
        ImageFolderDataModule(folder, val_size=0).prepare_data()
    assert built == [empty, tmp_path / "missing"] and (empty / "training" / "7").is_dir()
    ImageFolderDataModule(empty, val_size=0).prepare_data()  # built now: read, not built again
    with pytest.raises(DataError, match="does not exist"):
        ImageFolderDataModule(tmp_path / "elsewhere", build_mnist=False).prepare_data()  # data=folder never builds
    assert len(built) == 2


def test_data_folder_needs_its_folder(tmp_path):
    proc = run_in_process("train", "data=folder", f"paths.log_dir={tmp_path / 'logs'}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "data.data_dir=/path/to/folder" in proc.stderr, proc.stderr


def test_models_size_themselves_from_the_data(photos, make_cfg):
    """linear, MLP and the CNNs take their first layer from data.image_size and data.channels, and
    their outputs from the class folders."""
    from mnist99.build import build_datamodule, build_model, with_found

    for model, size, channels in (("linear", 16, 3), ("mlp", 20, 1), ("lenet", 32, 3), ("strided_cnn", 28, 1), ("cnn", 24, 3)):
        cfg = make_cfg(f"model={model}", "data=folder", f"data.image_size={size}", f"data.channels={channels}",
                       data_dir=photos, val_size=None)
        dm, num_classes = build_datamodule(cfg)
        net = build_model(with_found(cfg, num_classes))
        assert cfg.model.num_classes is None  # found from the data and passed in: the config stays as composed
        assert dm.data_train is None  # nothing read yet: the Trainer sets the data up when it runs
        dm.setup("fit")
        x, _ = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
        assert x.shape[1:] == (channels, size, size) and net(x).shape == (len(x), 3), model
    cfg = make_cfg("model=resnet18", "data=folder", "data.channels=1", data_dir=photos, val_size=None)
    dm, _ = build_datamodule(cfg)
    dm.setup("fit")
    x, _ = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert x.shape[1] == 3 and torch.equal(x[:, 0], x[:, 2])  # grey repeated into the ResNet's stem
    with pytest.raises(ConfigError, match="model.num_classes=10 but"):
        build_datamodule(make_cfg("model=linear", "data=folder", "model.num_classes=10", data_dir=photos, val_size=None))


def test_every_format_imagefolder_reads(tmp_path):
    root = write_png_tree(tmp_path / "t", n_train=2, n_test=1, classes=2)
    grey = np.asarray(Image.open(next((root / "training" / "0").iterdir())))
    for i, suffix in enumerate(("jpg", "jpeg", "bmp", "webp", "tif", "pgm", "ppm")):
        Image.fromarray(grey).convert("RGB" if suffix == "ppm" else "L").save(root / "training" / "1" / f"extra{i}.{suffix}")
    shutil.copy(next((root / "training" / "0").iterdir()), root / "training" / "0" / "copy.PNG")
    dm = ImageFolderDataModule(root, val_size=0)
    dm.setup()
    assert len(dm.data_train) == 2 * 2 + 7 + 1
