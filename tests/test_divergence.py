"""A diverging run is stopped at once, says why, keeps its last good checkpoint and is recorded."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from conftest import fit, run_in_process
from mnist99.callbacks import StopOnDivergence
from mnist99.errors import DivergedError


class Poison(L.Callback):
    """Turns the first conv's weights into NaN when epoch `epoch` starts."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            with torch.no_grad():
                pl_module.net[0][0].weight.fill_(float("nan"))


def test_nan_loss_stops_at_that_step_and_keeps_the_last_checkpoint(make_cfg, tmp_path):
    cfg = make_cfg("model=cnn", "trainer.max_epochs=3", "data.batch_size=32", "trainer.accelerator=cpu",
                   "trainer.enable_progress_bar=false", "logger=none")
    outcome = fit(cfg, Poison(epoch=1))
    message = outcome.message
    assert outcome.status == "diverged" and yaml.safe_load((tmp_path / "run.yaml").read_text())["status"] == "diverged"
    # 340 training images in batches of 32: 11 steps in epoch 0, so the first poisoned step is step 12
    assert "became nan at step 12 (epoch 1)" in message and "optimizer.lr=0.01" in message
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert f"The last good checkpoint is kept: {last}" in message and last.is_file()
    state = torch.load(last, weights_only=True)
    assert state["epoch"] == 0 and all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())


def feed(guard: StopOnDivergence, losses) -> None:
    trainer = type("T", (), {"global_step": 0, "current_epoch": 0, "checkpoint_callbacks": []})()
    module = type("M", (), {"num_classes": 10})()
    for i, v in enumerate(losses):
        trainer.global_step = i + 1
        guard.on_train_batch_end(trainer, module, {"loss": torch.tensor(v)}, None, i)


def test_a_loss_that_explodes_is_divergence_but_one_spike_is_not():
    feed(StopOnDivergence(lr=0.1), [2.3, 2.0, 60.0, 1.8, 1.5] * 10)  # a spike averages out
    with pytest.raises(DivergedError, match=r"averaged .* \(a random guess scores 2.30; the limit is 115\) at step \d+"):
        feed(StopOnDivergence(lr=100), [2.3, 40.0, 400.0, 900.0, 2000.0, 3000.0])
    with pytest.raises(DivergedError, match="became inf at step 2"):
        feed(StopOnDivergence(), [2.3, float("inf")])


def test_cli_records_a_diverged_run(tiny_tree, tmp_path):
    proc = run_in_process("train", f"data.data_dir={tiny_tree}", "data.val_size=60", "model=mlp", "optimizer=sgd", "optimizer.lr=1e6",
                   "scheduler=none", "trainer.max_epochs=2", f"paths.log_dir={tmp_path}")
    assert proc.returncode == 2
    assert "it diverged" in proc.stderr and "optimizer.lr=1e+06" in proc.stderr and "Traceback" not in proc.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    record = yaml.safe_load((Path(run_dir) / "run.yaml").read_text())
    assert record["status"] == "diverged" and "diverged" in record["error"]
