"""`python train.py resume=<finished run> trainer.max_epochs=N`: the added epochs get a schedule of
their own (a new one-cycle, a new cosine), and an interrupted extension resumes like any run."""

from __future__ import annotations

import os
import re
import signal
import shutil

import lightning as L
import pytest
import torch
from omegaconf import open_dict

from conftest import fit, one_paragraph, run_in_process


class RecordLR(L.Callback):
    """The learning rate each training step is taken with."""

    def __init__(self):
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


class SignalAt(L.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def fast_like(make_cfg, folder, scheduler: str = "onecycle", *extra: str):
    """experiment=fast (LeNet, Adam at 0.01, label smoothing) on the tiny tree: 25 steps an epoch."""
    # the recipe's cycle_momentum=false is one-cycle's: a cosine has no such argument
    drop = ["~scheduler.cycle_momentum"] if scheduler != "onecycle" else []
    cfg = make_cfg("experiment=fast", f"scheduler={scheduler}", *drop, "data.batch_size=16", "trainer.max_epochs=1",
                   "trainer.deterministic=true", "logger=none", "trainer.enable_progress_bar=false",
                   "trainer.accelerator=cpu", "trainer.precision=32-true", *extra, val_size=None)
    with open_dict(cfg):
        cfg.paths.output_dir = str(folder)
    return cfg


def train_further(cfg, folder, epochs: int = 2, callbacks=()):
    with open_dict(cfg):
        cfg.trainer.max_epochs = epochs
        cfg.resume_ckpt = str(folder / "checkpoints" / "last.ckpt")
    return fit(cfg, *callbacks)


@pytest.mark.parametrize("scheduler", ["onecycle", "cosine"])
def test_a_finished_run_trained_for_one_more_epoch_gets_a_new_schedule_over_it(make_cfg, tmp_path, scheduler):
    first_lrs, more_lrs = RecordLR(), RecordLR()
    first = fit(fast_like(make_cfg, tmp_path, scheduler), first_lrs).metrics
    assert first["epochs"] == 1 and len(first_lrs.lrs) == 25
    more = train_further(fast_like(make_cfg, tmp_path, scheduler), tmp_path, callbacks=[more_lrs]).metrics
    assert more["epochs"] == 2 and more["test/acc"] > 0.5  # chance is 0.1
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 50
    lrs = more_lrs.lrs
    assert len(lrs) == 25 and first_lrs.lrs[-1] < 1e-3  # the first schedule had come down
    peak = max(range(len(lrs)), key=lrs.__getitem__)
    assert lrs[peak] == pytest.approx(0.01, rel=0.01) and lrs[-1] < 1e-3  # up to optimizer.lr, then down again
    if scheduler == "onecycle":  # warm-up from lr/25, as the first cycle did
        assert 0 < peak < 24 and lrs[0] == pytest.approx(first_lrs.lrs[0]) and lrs == pytest.approx(first_lrs.lrs)
    else:  # a warm restart: straight back to optimizer.lr, then the cosine
        assert peak == 0 and all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_a_constant_rate_stays_constant_and_another_scheduler_starts_afresh(make_cfg, tmp_path):
    """scheduler=none: nothing changes. A run resumed with another scheduler than its own (the
    library allows it) gets the config's schedule over the added steps, not a mix of the two."""
    assert fit(fast_like(make_cfg, tmp_path, "none")).status == "completed"
    same, other = RecordLR(), RecordLR()
    train_further(fast_like(make_cfg, tmp_path, "none"), tmp_path, callbacks=[same])
    assert same.lrs == [0.01] * 25
    train_further(fast_like(make_cfg, tmp_path, "onecycle"), tmp_path, epochs=3, callbacks=[other])
    assert len(other.lrs) == 25 and other.lrs[0] == pytest.approx(0.01 / 25) and max(other.lrs) == pytest.approx(0.01, rel=0.01)


def test_an_extension_stopped_midway_resumes_to_the_same_weights(make_cfg, tmp_path):
    """One epoch, trained to two twice: once straight through, once stopped by SIGTERM at step 30
    and resumed as the message says. Both end with the same weights."""
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    assert fit(fast_like(make_cfg, whole)).status == "completed"
    shutil.copytree(whole, stopped)
    train_further(fast_like(make_cfg, whole), whole)
    interrupted = train_further(fast_like(make_cfg, stopped), stopped, callbacks=[SignalAt(30)])
    # the extension's config.yaml, written as it started, says 2 epochs: resume= alone goes on to them
    assert interrupted.status == "interrupted" and interrupted.signum == signal.SIGTERM
    assert f"python train.py resume={stopped}" in interrupted.message and "max_epochs" not in interrupted.message
    resumed = train_further(fast_like(make_cfg, stopped), stopped)
    assert resumed.metrics["epochs"] == 2
    a, b = (torch.load(f / "checkpoints" / "last.ckpt", weights_only=True) for f in (whole, stopped))
    assert a["global_step"] == b["global_step"] == 50
    for name, tensor in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][name], tensor, rtol=0, atol=1e-6, msg=name)


def test_train_further_on_the_command_line(tiny_tree, tmp_path):
    args = ("experiment=fast", f"data.data_dir={tiny_tree}", "data.batch_size=16", "logger=csv", f"paths.log_dir={tmp_path}")
    first = run_in_process("train", *args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    first_rows = (run_dir / "metrics.csv").read_text()
    again = run_in_process("train", f"resume={run_dir}", "trainer.max_epochs=2", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    # the first attempt's CSV rows are kept (Lightning's CSVLogger would delete them), this one's beside them
    assert (run_dir / "metrics-1.csv").read_text() == first_rows and "test/acc" in (run_dir / "metrics.csv").read_text()
    assert "warning" not in again.stderr.lower(), again.stderr[-2000:]
    assert (f"Resumed from {(run_dir / 'checkpoints' / 'last.ckpt').relative_to(tmp_path)} at step 25 (epoch 1); training on to "
            "step 50: 25 more steps, with a new one-cycle schedule (peak learning rate 0.01).") in again.stdout, again.stdout
    summary = [line for line in again.stdout.splitlines() if line.startswith("mnist99: task=fast")]
    assert summary and re.search(r"test/acc=\d\.\d{4} .* epochs=2 ", summary[0]), again.stdout[-2000:]
    # a group cannot be swapped on a resume (its saved config is composed already): one paragraph,
    # and the finished run's record is left as it was
    record = (run_dir / "run.yaml").read_text()
    swap = run_in_process("train", f"resume={run_dir}", "scheduler=cosine", "trainer.max_epochs=3", cwd=tmp_path)
    assert swap.returncode == 2 and "scheduler=cosine cannot swap one" in swap.stderr and "Traceback" not in swap.stderr
    assert (run_dir / "run.yaml").read_text() == record
    # trained to 2 epochs already: asking for 2 again trains nothing, and says how to go on
    same = run_in_process("train", f"resume={run_dir}", "trainer.max_epochs=2", cwd=tmp_path)
    assert same.returncode == 2 and "at the end of epoch 2 of 2 (trainer.max_epochs=2)" in one_paragraph(same.stderr)
    assert f"resume={run_dir} trainer.max_epochs=4" in same.stderr and (run_dir / "run.yaml").read_text() == record
