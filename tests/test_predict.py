"""`python predict.py`: a trained run classifies digit pictures of any size, colour and polarity."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import run_in_process
from mnist99.data import safe_image
from mnist99.data.digit_image import to_mnist
from test_hostile_images import header_only_png


@pytest.fixture(scope="module")
def real_run(real_subset, tmp_path_factory):
    """experiment=fast trained on the 4000-image real subset for 3 epochs (~190 steps at batch 64)."""
    logs = tmp_path_factory.mktemp("predictlogs")
    proc = run_in_process("train", "experiment=fast", f"data.data_dir={real_subset}", "data.val_size=0", "trainer.max_epochs=3", "data.batch_size=64", "trainer.precision=32",
                   "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "logger=none", f"paths.log_dir={logs}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (logs / "runs").iterdir()
    return run_dir


def known_digits(real_subset) -> list[tuple[int, np.ndarray]]:
    """The first test image of each class: (label, white-on-black uint8 28x28)."""
    return [(d, np.asarray(Image.open(min((real_subset / "testing" / str(d)).iterdir())))) for d in range(10)]


def predict(*args):
    return run_in_process("predict", *args)


def predicted(csv_path) -> dict[str, str]:
    return {r["path"].rsplit("/", 1)[-1]: r["predicted"] for r in csv.DictReader(csv_path.open())}


def test_predict_reads_any_size_colour_and_polarity(real_run, real_subset, tmp_path):
    pics = tmp_path / "pics"
    pics.mkdir()
    for d, img in known_digits(real_subset):
        Image.fromarray(img).save(pics / f"plain_{d}.png")
        # a phone photo's shape: 3x larger, RGB, dark ink on a light page, saved as JPEG
        big = Image.fromarray(255 - img).resize((84, 84), Image.BICUBIC).convert("RGB")
        big.save(pics / f"photo_{d}.jpg", quality=95)
        # a drawing app's canvas: black strokes on a transparent background
        rgba = np.zeros((56, 56, 4), np.uint8)
        rgba[..., 3] = np.asarray(Image.fromarray(img).resize((56, 56), Image.BICUBIC))
        Image.fromarray(rgba, mode="RGBA").save(pics / f"canvas_{d}.png")
    (pics / "notes.txt").write_text("not an image, and not looked at: only image suffixes are")
    out = tmp_path / "out" / "predictions.csv"
    proc = predict(f"ckpt_path={real_run}", f"inputs={pics}", f"csv={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = predicted(out)
    assert len(got) == 30 and len(proc.stdout.strip().splitlines()) == 31  # 30 lines + "wrote ..."
    for kind in ("plain", "photo", "canvas"):
        right = sum(got[f"{kind}_{d}.{'jpg' if kind == 'photo' else 'png'}"] == str(d) for d in range(10))
        assert right >= 9, (kind, got)
    rows = list(csv.DictReader(out.open()))
    assert sum(float(rows[0][f"p_{d}"]) for d in range(10)) == pytest.approx(1.0, abs=1e-4)


def test_an_inverted_image_is_still_right(real_run, real_subset, tmp_path):
    d, img = known_digits(real_subset)[7]
    Image.fromarray(img).save(tmp_path / "white_on_black.png")
    Image.fromarray(255 - img).save(tmp_path / "black_on_white.png")
    proc = predict(f"ckpt_path={real_run}", f"inputs={tmp_path / 'white_on_black.png'},{tmp_path / 'black_on_white.png'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    labels = [line.split()[1] for line in proc.stdout.strip().splitlines()]
    assert labels == ["7", "7"]


def test_to_mnist_frames_a_digit_as_mnist_does():
    page = np.full((200, 120), 230, np.uint8)  # light paper
    page[40:160, 50:70] = 20  # a dark vertical stroke: a "1", 120 px tall
    out = to_mnist(Image.fromarray(page))
    assert out.shape == (28, 28) and out.dtype == np.uint8
    rows, cols = np.nonzero(out > 64)
    assert rows.max() - rows.min() + 1 in (20, 21)  # the longer side scaled to 20 px
    assert abs(np.average(np.arange(28), weights=out.sum(1)) - 13.5) < 1  # centred by mass
    assert out[0].max() == 0 and out[:, 0].max() == 0  # background black: the page was inverted


def test_predict_reports_bad_inputs_clearly(real_run, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(good)
    proc = run_in_process("predict", f"ckpt_path={real_run}", f"inputs={tmp_path}")
    assert proc.returncode == 1 and "broken.png" in proc.stderr and "Traceback" not in proc.stderr
    assert "good.png" in proc.stdout  # the readable ones still get their answer
    proc = run_in_process("predict", f"ckpt_path={real_run}", f"inputs={tmp_path / 'missing'}")
    assert proc.returncode != 0 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_in_process("predict", f"ckpt_path={real_run}")
    assert proc.returncode == 2 and "inputs is missing" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_in_process("predict", f"ckpt_path={real_run}", f"inputs={good}", "batch_size=0")
    assert proc.returncode == 2 and "batch_size=0 is impossible" in proc.stderr


def test_predict_skips_hostile_pictures_and_reads_the_rest(real_run, real_subset, tmp_path, monkeypatch, recwarn):
    """Too many pixels (a real 12000x12000 header; a 40x40 picture under a limit of 28x28) and a
    truncated PNG are each named with a reason, and no warning is shown; the digit is still read."""
    pics = tmp_path / "pics"
    pics.mkdir()
    d, img = known_digits(real_subset)[3]
    Image.fromarray(img).save(pics / "digit.png")
    (pics / "bomb.png").write_bytes(header_only_png(12000, 12000))
    Image.new("L", (40, 40)).save(pics / "forty.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)).save(tmp_path / "noise.png")
    (pics / "cut.png").write_bytes((tmp_path / "noise.png").read_bytes()[:400])
    monkeypatch.setattr(safe_image, "MAX_PIXELS", 28 * 28)
    proc = predict(f"ckpt_path={real_run}", f"inputs={pics}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert [line.split()[:2] for line in proc.stdout.strip().splitlines()] == [[str(pics / "digit.png"), str(d)]]
    assert proc.stderr.splitlines()[1:] == [
        "mnist99: skipped files that are not readable images (fix or remove them):",
        f"  {pics / 'bomb.png'}: too large: 12000x12000 = 144,000,000 pixels, over the limit of 784",
        f"  {pics / 'cut.png'}: not a readable image (OSError: image file is truncated)",
        f"  {pics / 'forty.png'}: too large: 40x40 = 1,600 pixels, over the limit of 784",
    ]
    assert recwarn.list == []


def test_predict_is_a_hydra_app_with_help():
    helped = run_in_process("predict", "--help")
    assert helped.returncode == 0
    for key in ("ckpt_path", "inputs", "csv", "batch_size: 512"):
        assert key in helped.stdout


def test_predict_takes_a_checkpoint_copied_alone(real_run, real_subset, tmp_path):
    lone = tmp_path / "alone" / "digits.ckpt"
    lone.parent.mkdir()
    shutil.copy(real_run / "checkpoints" / "last.ckpt", lone)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for d, img in known_digits(real_subset):
        Image.fromarray(img).save(elsewhere / f"digit_{d}.png")
    inputs = ",".join(f"digit_{d}.png" for d in range(10))  # relative to the working folder
    alone = run_in_process("predict", f"ckpt_path={lone}", f"inputs={inputs}", cwd=elsewhere)
    assert alone.returncode == 0, alone.stderr[-3000:]
    labels = [line.split()[1] for line in alone.stdout.strip().splitlines()]
    assert sum(label == str(d) for d, label in enumerate(labels)) >= 9, alone.stdout
    in_its_run = run_in_process("predict", f"ckpt_path={real_run / 'checkpoints' / 'last.ckpt'}", f"inputs={inputs}", cwd=elsewhere)
    assert in_its_run.returncode == 0 and in_its_run.stdout == alone.stdout  # the same answers, the same probabilities
    # predict writes nothing but the csv= it is asked for: not beside the checkpoint, not where it runs
    assert [p.name for p in lone.parent.iterdir()] == ["digits.ckpt"]
    assert sorted(p.name for p in elsewhere.iterdir()) == sorted(f"digit_{d}.png" for d in range(10))
