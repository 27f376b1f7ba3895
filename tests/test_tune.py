"""tune.lr_find: Lightning's learning-rate finder writes its plot and suggestion, and can set the rate."""

from __future__ import annotations

import lightning as L
import pytest
import yaml

from conftest import fit

BASE = ("model=mlp", "trainer.max_epochs=1", "data.batch_size=16", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
        "tune.lr_find=true", "tune.num_training=20", "tune.min_lr=1e-5", "tune.max_lr=1.0")


class FirstStepLR(L.Callback):
    """The learning rate the optimizer takes the run's first training step with."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 0:
            self.lr = trainer.optimizers[0].param_groups[0]["lr"]


def test_lr_find_writes_plot_and_a_suggestion_in_range(make_cfg, tmp_path):
    metrics = fit(make_cfg(*BASE)).metrics
    found = yaml.safe_load((tmp_path / "lr_find.yaml").read_text())
    assert 1e-5 <= found["suggested_lr"] <= 1.0 and found["suggested_lr"] != 0.01
    assert len(found["lr"]) == len(found["loss"]) == 20 and found["lr"] == sorted(found["lr"])  # the sweep, rising
    assert (tmp_path / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
    assert metrics["tune/suggested_lr"] == pytest.approx(found["suggested_lr"])


def test_use_suggested_lr_trains_with_it(make_cfg, tmp_path):
    cfg = make_cfg(*BASE, "scheduler=none", "tune.use_suggested_lr=true")
    first_step = FirstStepLR()
    suggested = fit(cfg, first_step).metrics["tune/suggested_lr"]
    assert suggested != 0.01 and cfg.optimizer.lr == 0.01  # the composed config stays as it was
    assert first_step.lr == pytest.approx(suggested)  # the optimizer trains with it
    ran = yaml.safe_load((tmp_path / "config.yaml").read_text())  # what ran says the rate it trained with
    assert ran["optimizer"]["lr"] == pytest.approx(suggested)
    assert yaml.safe_load((tmp_path / "hparams.yaml").read_text())["lr"] == pytest.approx(suggested)


def test_impossible_range(make_cfg):
    outcome = fit(make_cfg(*BASE, "tune.min_lr=1.0", "tune.max_lr=0.1"))
    assert outcome.status == "failed" and "need 0 < min_lr < max_lr" in outcome.message


def test_lr_find_takes_all_its_steps_under_limit_train_batches(make_cfg, tmp_path):
    # 3 batches an epoch and 1 epoch: the finder runs its epochs until its 20 steps are taken
    fit(make_cfg(*BASE, "trainer.limit_train_batches=3"))
    found = yaml.safe_load((tmp_path / "lr_find.yaml").read_text())
    assert len(found["lr"]) == 20 and found["lr"][-1] > 0.5  # the whole range, up to max_lr
