"""`python train.py` as a user runs it: outputs, TensorBoard content, sweeps, and clear errors."""

from __future__ import annotations

import os
import re
from importlib import metadata

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import one_paragraph, run_cli, run_in_process


def only(paths):
    paths = list(paths)
    assert len(paths) == 1, paths
    return paths[0]


@pytest.fixture
def finished_run(trained_run_process):
    """One run started from another folder (conftest), its outputs in a temporary log dir."""
    return trained_run_process


def test_run_prints_summary_and_records_itself(finished_run):
    proc, run_dir = finished_run
    assert run_dir.name.endswith("_lenet")  # task_name: the model's name when no experiment names the run
    assert "mnist99: task=lenet model=lenet test/acc=" in proc.stdout and str(run_dir.name) in proc.stdout
    record = yaml.safe_load((run_dir / "run.yaml").read_text())
    assert record["status"] == "completed" and record["epochs"] == 2
    assert record["versions"]["torch"] == metadata.version("torch")
    assert f"{os.cpu_count()} cores" in record["versions"]["machine"]  # timings name the machine they were taken on
    assert record["metrics"]["test/acc"] > 0.2  # 22 steps on the tiny tree, where chance is 0.1
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["_target_"].endswith("Classifier")
    assert "trainer.max_epochs=2" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    # the kept checkpoint is the best epoch by val/acc_best, named by its epoch and accuracy, and tested
    names = [p.name for p in (run_dir / "checkpoints").iterdir()]
    best = only(n for n in names if n != "last.ckpt")
    epoch, acc = re.fullmatch(r"epoch(\d{3})-val_acc(\d\.\d{4})\.ckpt", best).groups()
    assert float(acc) == pytest.approx(record["metrics"]["val/acc_best"], abs=6e-5)
    assert int(epoch) in (0, 1) and record["tested_weights"].endswith(best)


def test_tensorboard_events_hold_metrics_and_hparams(finished_run):
    _, run_dir = finished_run
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/acc", "train/lr", "val/loss", "val/acc", "val/acc_best"} <= tags
    assert len(acc.Scalars("val/acc")) == 2
    # the hparams summary declares the real metrics, never a placeholder hp_metric
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["model"].string_value == "lenet"
    assert start.hparams["lr"].number_value == pytest.approx(0.01)
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} >= {"val/acc_best", "test/acc"}
    assert "hp_metric" not in tags
    # test/acc is in the events too (a second event file written by trainer.test)
    assert any("test/acc" in EventAccumulator(str(f)).Reload().Tags()["scalars"] for f in run_dir.glob("events.out.tfevents.*"))


def test_multirun_two_jobs(tiny_tree, tmp_path):
    proc = run_in_process("train", "-m", "model=linear,mlp", f"data.data_dir={tiny_tree}", "data.val_size=60", "trainer.max_epochs=1",
                   f"paths.log_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = only((tmp_path / "multirun").iterdir())
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["0_model=linear", "1_model=mlp"]  # what varies: the shared overrides stay in config.yaml
    for job in jobs:
        assert yaml.safe_load((sweep / job / "run.yaml").read_text())["status"] == "completed"
    assert proc.stdout.count("mnist99: task=") == 2


def test_a_value_the_data_refuses_leaves_no_run_folder(tiny_tree, tmp_path):
    """data.val_size beyond the training split is known once the folder is read: one paragraph all the same
    (the start-up refusals: test_first_contact.py)."""
    proc = run_in_process("train", f"data.data_dir={tiny_tree}", "data.val_size=100000", f"paths.log_dir={tmp_path}")
    assert proc.returncode == 2 and "data.val_size=100000 is impossible" in one_paragraph(proc.stderr)
    assert not list(tmp_path.rglob("run.yaml"))


def test_bad_input_in_a_real_process(tiny_tree, tmp_path):
    """The same refusal from a new interpreter, as a user meets it: status 2, one paragraph."""
    proc = run_cli(f"data.data_dir={tiny_tree}", "optimizer.lr=-1", f"paths.log_dir={tmp_path}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == ("mnist99: error: optimizer.lr=-1 is impossible: it must be a number greater than 0. "
                                   "Try e.g. optimizer.lr=0.001.")


@pytest.mark.slow  # two real processes (16 s): .ci/run runs it after the default run
def test_ddp_on_two_cpu_processes(tiny_tree, tmp_path):
    """trainer=ddp really starts two processes (gloo) and still leaves exactly one run folder."""
    proc = run_cli("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", f"data.data_dir={tiny_tree}",
                   "data.val_size=60", "trainer.max_epochs=1", f"paths.log_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = only((tmp_path / "runs").iterdir())
    assert (run_dir / "train_ddp_process_1.log").is_file()  # the second rank ran
    assert yaml.safe_load((run_dir / "run.yaml").read_text())["status"] == "completed"
    assert proc.stdout.count("mnist99: task=") == 1  # one summary, from rank 0
