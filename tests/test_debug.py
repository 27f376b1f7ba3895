"""The debugging presets: debug=fdr, overfit, limit, profiler, and `--cfg job`."""

from __future__ import annotations

from collections import Counter

import lightning as L

from conftest import fit, run_in_process

CPU = ("trainer.accelerator=cpu", "trainer.enable_progress_bar=false")


class BatchCounter(L.Callback):
    """Batches each split ran, per epoch for training and validation."""

    def __init__(self):
        self.train, self.val, self.test = Counter(), Counter(), 0

    def on_train_batch_end(self, trainer, *args):
        self.train[trainer.current_epoch] += 1

    def on_validation_batch_end(self, trainer, *args):
        if not trainer.sanity_checking:
            self.val[trainer.current_epoch] += 1

    def on_test_batch_end(self, trainer, *args):
        self.test += 1


def test_fdr_runs_one_batch_of_each_split_and_writes_nothing(make_cfg, tmp_path):
    counter = BatchCounter()
    metrics = fit(make_cfg("debug=fdr", *CPU), counter).metrics
    assert (counter.train, counter.val, counter.test) == ({0: 1}, {0: 1}, 1)
    assert metrics["epochs"] == 1
    assert not (tmp_path / "checkpoints").exists()  # Lightning's fast_dev_run writes no checkpoint
    assert not list(tmp_path.glob("events.out.tfevents.*"))


def test_overfit_reaches_full_training_accuracy(make_cfg):
    """A working model memorises its few batches: train/acc ends at 100%."""
    metrics = fit(make_cfg("debug=overfit", "trainer.max_epochs=40", *CPU)).metrics
    assert metrics["train/acc"] >= 0.99, metrics


def test_limit_runs_small_fractions_of_each_split(make_cfg):
    # batches of 8: 200 training images (25 batches), 200 held out (25), 120 test images (15)
    counter = BatchCounter()
    metrics = fit(make_cfg("debug=limit", "data.batch_size=8", *CPU, val_size=200), counter).metrics
    # 5% of 25 training batches, 10% of 25 validation and of 15 test batches, over 2 epochs
    assert (counter.train, counter.val, counter.test) == ({0: 1, 1: 1}, {0: 2, 1: 2}, 1)
    assert metrics["epochs"] == 2


def test_profiler_report_lands_in_the_run_dir(make_cfg, tmp_path):
    assert fit(make_cfg("debug=profiler", "data.batch_size=8", *CPU, val_size=200)).status == "completed"
    report = (tmp_path / "fit-profiler.txt").read_text()
    assert "run_training_epoch" in report and "Action" in report


def test_cfg_job_prints_the_composed_config():
    proc = run_in_process("train", "--cfg", "job", "debug=limit", "model=mlp")
    assert proc.returncode == 0 and "limit_train_batches: 0.05" in proc.stdout and "hidden_size: 30" in proc.stdout
