"""The debugging presets: debug=fdr, overfit, limit, profiler, and `--cfg job`."""

from __future__ import annotations

from conftest import run_cli
from mnist99.train import train

CPU = ("trainer.accelerator=cpu", "trainer.enable_progress_bar=false")


def test_fdr_runs_one_batch_of_each_split(make_cfg):
    cfg = make_cfg("debug=fdr", *CPU)
    assert cfg.trainer.fast_dev_run is True
    metrics = train(cfg)
    assert 0 <= metrics["test/acc"] <= 1 and metrics["epochs"] == 1


def test_overfit_reaches_full_training_accuracy(make_cfg):
    """A working model memorises its few batches: train/acc ends at 100%."""
    metrics = train(make_cfg("debug=overfit", "trainer.max_epochs=40", *CPU))
    assert metrics["train/acc"] >= 0.99, metrics


def test_limit_uses_small_fractions(make_cfg):
    # batches of 8 so that 5% of the tiny tree's batches is still one batch
    cfg = make_cfg("debug=limit", "data.batch_size=8", *CPU, val_size=200)
    assert (cfg.trainer.limit_train_batches, cfg.trainer.limit_val_batches, cfg.trainer.max_epochs) == (0.05, 0.1, 2)
    assert train(cfg)["epochs"] == 2


def test_profiler_report_lands_in_the_run_dir(make_cfg, tmp_path):
    train(make_cfg("debug=profiler", "data.batch_size=8", *CPU, val_size=200))
    report = (tmp_path / "fit-profiler.txt").read_text()
    assert "run_training_epoch" in report and "Action" in report


def test_cfg_job_prints_the_composed_config():
    proc = run_cli("--cfg", "job", "debug=limit", "model=mlp")
    assert proc.returncode == 0 and "limit_train_batches: 0.05" in proc.stdout and "hidden_size: 30" in proc.stdout
