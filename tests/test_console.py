"""What a training run prints: mnist99's lines (the data, a short model summary, the bars, the
summary line), without Lightning's notices, adverts, warnings that say nothing to a user, or its
summary of every submodule. eval.py and predict.py print their answers as quietly (a resumed run's
console: tests/test_resume.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from types import SimpleNamespace

import pytest

from conftest import ROOT, fit, run_cli
from mnist99.build import build_callbacks, build_trainer
from mnist99.callbacks import NetSummary
from mnist99.callbacks.net_summary import human, summary_lines
from mnist99.callbacks import UnevenTestSplit
from mnist99.models import nets
from mnist99.models.classifier import Classifier, ScratchLinear

NOISE = ("GPU available", "TPU available", "Tip", "litlogger", "site-packages", "FLOPs", "Restoring states",
         "Loaded model weights", "Loading `train_dataloader`", "`Trainer.fit` stopped", "log_every_n_steps",
         "MulticlassAccuracy", "MeanMetric", "train_acc", "val_acc_best", "Trainable params", "Traceback")


def test_a_short_run_prints_the_data_the_model_the_bars_and_the_summary_line(tiny_tree, tmp_path):
    """experiment=fast for 5 batches, testing its best checkpoint (data.val_size > 0): a dozen
    lines, none of Lightning's notices, and a summary of the net with its size and cost."""
    proc = run_cli("experiment=fast", f"data.data_dir={tiny_tree}", "data.val_size=60", "data.batch_size=16",
                   "trainer.limit_train_batches=5", "trainer.limit_val_batches=5", "trainer.limit_test_batches=5",
                   f"paths.log_dir={tmp_path}", cwd=tmp_path, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    for noise in NOISE:
        assert noise not in out, (noise, out)
    net = nets.LeNet(widths=(16, 32))
    params = sum(p.numel() for p in net.parameters())
    assert f"Model: LeNet, {params:,} parameters, {human(nets.count_macs(net))} multiply-adds per 1x28x28 image" in out, out
    assert "net.0  Conv2d" in out and "net.7  Linear  205,056" in out, out
    assert "mnist99: task=fast model=lenet test/acc=" in out
    assert len([line for line in out.splitlines() if line.strip()]) <= 20, out
    # the messages alone on the console (Hydra's [time][module][INFO] prefix stays in train.log)
    assert any(line.startswith("Data: 340 training images (60 held out for validation), 120 test images")
               for line in out.splitlines()), out[:500]
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert "][mnist99.data.datamodule][INFO] - Data: 340 training images" in (run_dir / "train.log").read_text()


@pytest.mark.slow  # two new interpreters (16 s): .ci/run runs it after the default run
def test_eval_and_predict_print_their_answers_and_none_of_lightnings_notices(trained_run, tiny_tree, tmp_path):
    """In a new interpreter, as a user runs them: importing Lightning there turns its notices on again
    (GPU available, TPU available, the cloud logger's tip), which eval.py's trainer would print twice."""
    def command(name: str, *args: str) -> str:
        proc = subprocess.run([sys.executable, str(ROOT / f"{name}.py"), *args], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-3000:]
        for noise in (*NOISE, "💡", "LitLogger", "[INFO]"):
            assert noise not in out, (noise, out)
        assert not [line for line in out.splitlines() if line.startswith("[20")], out
        return out

    lines = command("eval", f"ckpt_path={trained_run}", f"output_dir={tmp_path / 'eval'}").strip().splitlines()
    assert [line.split("=")[0].split()[0] for line in lines] == ["Data:", "test/acc", "per", "wrote"], lines
    digits = sorted((tiny_tree / "testing" / "3").iterdir())
    lines = command("predict", f"ckpt_path={trained_run}", f"inputs={tiny_tree / 'testing' / '3'}").strip().splitlines()
    assert [line.split()[:2] for line in lines] == [[str(p), "3"] for p in digits], lines


@pytest.mark.parametrize("name", ["mlp", "linear", "cnn", "resnet18", "resnet152"])
def test_the_summary_shows_the_nets_layers_parameters_and_multiply_adds(name):
    net = {"mlp": lambda: nets.MLP(), "linear": lambda: nets.LinearNet(), "cnn": lambda: nets.FastCNN(),
           "resnet18": lambda: nets.ResNet(name="resnet18", in_channels=1, num_classes=10, head="linear"),
           "resnet152": lambda: nets.ResNet(name="resnet152", in_channels=1, num_classes=10, head="linear")}[name]()
    lines = summary_lines(Classifier(net))
    params = sum(p.numel() for p in net.parameters())
    assert lines[0].startswith(f"Model: {type(net).__name__}, {params:,} parameters, {human(nets.count_macs(net))} multiply-adds")
    assert len(lines) <= 10, lines
    text = "\n".join(lines)
    assert "_acc" not in text and "_loss" not in text and "Metric" not in text
    assert all(line.split()[0].startswith("net.") for line in lines[2:-1]), lines  # layers of the net, by their state_dict names
    if name.startswith("resnet"):
        assert "net.layer3" in text and " x B" in text  # blocks counted, not listed


def test_the_summary_of_a_model_without_a_net_shows_its_own_parameters():
    lines = summary_lines(ScratchLinear())
    assert lines[0].startswith("Model: ScratchLinear, 7,850 parameters, 7.8 K multiply-adds")
    assert lines[2].split()[:4] == ["weights", "Parameter", "784x10", "7,840"] and lines[3].split()[0] == "bias"
    assert len(lines) == 4


def test_one_summary_of_ours_and_none_with_enable_model_summary_false(make_cfg):
    cfg = make_cfg()
    trainer = build_trainer(cfg, callbacks=build_callbacks(cfg))
    from lightning.pytorch.callbacks import ModelSummary

    assert [type(c) for c in trainer.callbacks if isinstance(c, ModelSummary)] == [NetSummary]
    cfg = make_cfg("trainer.enable_model_summary=false")
    trainer = build_trainer(cfg, callbacks=build_callbacks(cfg))
    assert not [c for c in trainer.callbacks if isinstance(c, ModelSummary)]


def test_an_epoch_shorter_than_the_log_interval_logs_once_an_epoch_without_a_warning(make_cfg):
    cfg = make_cfg("model=mlp", "data.batch_size=32", "trainer.max_epochs=1", "trainer.limit_train_batches=5",
                   "trainer.limit_val_batches=1", "trainer.log_every_n_steps=50", "logger=csv", "test=false",
                   "trainer.enable_progress_bar=false", "trainer.accelerator=cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome = fit(cfg)
    metrics, model = outcome.metrics, outcome.parts.model
    assert model.trainer.log_every_n_steps == 5
    assert "train/loss" in metrics  # logged at the epoch's 5th step
    assert not [w for w in caught if "logging interval" in str(w.message)]


def test_a_test_set_that_does_not_split_evenly_across_devices_is_said_in_our_words(caplog):
    trainer = SimpleNamespace(world_size=3, is_global_zero=True, datamodule=SimpleNamespace(data_test=range(10000)))
    with caplog.at_level("WARNING", logger="mnist99.callbacks"):
        UnevenTestSplit().on_test_start(trainer, None)
        assert "the 10000 test images do not split evenly, so 2 of them are tested twice" in caplog.text
        assert "python eval.py ckpt_path=" in caplog.text
        caplog.clear()
        trainer.world_size = 4
        UnevenTestSplit().on_test_start(trainer, None)
        assert not caplog.text
