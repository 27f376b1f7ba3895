"""tune.lr_find: Lightning's learning-rate finder writes its plot and suggestion, and can set the rate."""

from __future__ import annotations

import pytest
import yaml

from mnist99.errors import ConfigError
from mnist99.pipeline import train

BASE = ("model=mlp", "trainer.max_epochs=1", "data.batch_size=16", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
        "tune.lr_find=true", "tune.num_training=20", "tune.min_lr=1e-5", "tune.max_lr=1.0")


def test_lr_find_writes_plot_and_a_suggestion_in_range(make_cfg, tmp_path):
    metrics = train(make_cfg(*BASE))
    found = yaml.safe_load((tmp_path / "lr_find.yaml").read_text())
    assert 1e-5 <= found["suggested_lr"] <= 1.0 and len(found["lr"]) == len(found["loss"]) > 5
    assert (tmp_path / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
    assert metrics["tune/suggested_lr"] == pytest.approx(found["suggested_lr"])


def test_use_suggested_lr_trains_with_it(make_cfg, tmp_path):
    cfg = make_cfg(*BASE, "tune.use_suggested_lr=true")
    metrics = train(cfg)
    suggested = metrics["tune/suggested_lr"]
    assert suggested != 0.01 and cfg.optimizer.lr == 0.01  # the composed config stays as it was
    ran = yaml.safe_load((tmp_path / "config.yaml").read_text())  # what ran says the rate it trained with
    assert ran["optimizer"]["lr"] == pytest.approx(suggested)
    assert yaml.safe_load((tmp_path / "hparams.yaml").read_text())["lr"] == pytest.approx(suggested)


def test_impossible_range(make_cfg):
    with pytest.raises(ConfigError, match="min_lr < max_lr"):
        train(make_cfg(*BASE, "tune.min_lr=1.0", "tune.max_lr=0.1"))
