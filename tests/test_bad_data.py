"""Bad data, as users meet it: each case gets a clear message naming the file or folder, or is
handled and reported (data.on_bad_image=skip, colour images, stray files, concurrent caching)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import ROOT, run_in_process

QUICK = ("data.val_size=60", "trainer.max_epochs=1", "model=linear", "trainer.enable_progress_bar=false", "logger=csv")


@pytest.fixture
def tree(tiny_tree, tmp_path):
    dst = tmp_path / "mnist_png"
    shutil.copytree(tiny_tree, dst, ignore=shutil.ignore_patterns(".mnist99_cache"))
    return dst


def train(tree, tmp_path, *extra):
    return run_in_process("train", f"data.data_dir={tree}", *QUICK, f"paths.log_dir={tmp_path / 'logs'}", *extra)


def refused(proc, *words):
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "mnist99: error:" in proc.stderr, proc.stderr[-3000:]
    for w in words:
        assert w in proc.stderr, proc.stderr[-3000:]


def damage(tree):
    """One truncated PNG and one empty file named .png in training/3."""
    broken = tree / "training" / "3" / "3000.png"
    broken.write_bytes(broken.read_bytes()[:40])
    (tree / "training" / "3" / "3001.png").write_bytes(b"")
    return broken


def test_on_bad_image_error_names_the_file_and_skip_leaves_it_out(tree, tmp_path):
    broken = damage(tree)
    refused(train(tree, tmp_path), str(broken), "data.on_bad_image=skip")
    proc = train(tree, tmp_path, "data.on_bad_image=skip")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Skipped 2 unusable image(s)" in proc.stdout  # the run's log (console and train.log)
    run_dir = max((tmp_path / "logs" / "runs").iterdir())  # the first, refused run has its folder too
    record = yaml.safe_load((run_dir / "run.yaml").read_text())
    assert record["status"] == "completed" and record["metrics"]["data/skipped_images"] == 2
    assert "data/skipped_images" in (run_dir / "metrics.csv").read_text().splitlines()[0]
    refused(train(tree, tmp_path, "data.on_bad_image=maybe"), "data.on_bad_image='maybe'")


def test_colour_images_are_made_grey_and_stray_files_ignored_with_a_message(tree, tmp_path):
    grey = np.asarray(Image.open(tree / "training" / "5" / "5000.png"))
    Image.fromarray(np.stack([grey] * 3, -1), mode="RGB").save(tree / "training" / "5" / "5000.png")
    (tree / "training" / "5" / "notes.txt").write_text("not an image")
    (tree / "training" / "5" / ".DS_Store").write_bytes(b"\0")
    proc = train(tree, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 image(s)" in proc.stdout and "converted to grey" in proc.stdout
    assert "Ignored 1 file(s)" in proc.stdout and "5/notes.txt" in proc.stdout


@pytest.mark.parametrize("case, words", [
    ("empty class folder", ["holds no images", "training/4"]),
    ("missing testing", ["testing"]),
    ("other classes in testing", ["class folders differ"]),
])
def test_broken_trees_are_refused_by_name(tree, tmp_path, case, words):
    if case == "empty class folder":
        for f in (tree / "training" / "4").iterdir():
            f.unlink()
    elif case == "missing testing":
        shutil.rmtree(tree / "testing")
    else:
        (tree / "testing" / "9").rename(tree / "testing" / "nine")
    refused(train(tree, tmp_path, "data.source=null", "data.pypi=false", "data.mirrors=[]"), *words)


def test_a_data_dir_that_does_not_exist_and_cannot_be_built(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere" / "mnist_png"
    monkeypatch.setenv("MNIST99_SOURCE", "")
    proc = run_in_process("train", f"data.data_dir={missing}", *QUICK, f"paths.log_dir={tmp_path / 'logs'}", "data.source=null",
                          "data.pypi=false", "data.mirrors=[]")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and str(missing) in proc.stderr, proc.stderr[-3000:]


def test_two_processes_caching_the_same_split_decode_it_once(tree, tmp_path):
    code = ("import logging, sys; logging.basicConfig(level=logging.INFO, format='%(message)s'); "
            "from mnist99.data.cache import load_split; x, y, c, s = load_split(sys.argv[1], cache_dir=sys.argv[2]); "
            "print(len(y), int(x.sum()))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tree / "training"), str(tmp_path / "cache")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert outs[0][0] == outs[1][0] and outs[0][0].startswith("400 ")  # the same 400 images
    assert sum("Decoding 400 images" in err for _, err in outs) == 1, outs  # one built, the other waited
