"""The template's conveniences: an early-stopping preset that says why it stopped, tags on a run, and
conf/local/default.yaml, one machine's settings read when present."""

from __future__ import annotations

import yaml

from conftest import one_paragraph, run_in_process, search_path_with

TINY = ("data.val_size=60", "trainer.enable_progress_bar=false", "logger=csv", "model=linear", "data.batch_size=32")


def only_run(log_dir):
    (run,) = (log_dir / "runs").iterdir()
    return run, yaml.safe_load((run / "run.yaml").read_text())


def test_early_stopping_ends_a_run_whose_val_acc_stopped_improving(tiny_tree, tmp_path):
    """The tiny tree is learnt within a few epochs: val/acc then stays put, and patience 2 ends the run
    long before its 40 epochs, saying so in the summary line and run.yaml."""
    proc = run_in_process("train", "callbacks=[default,early_stopping]", "callbacks.early_stopping.patience=2", "trainer.max_epochs=40",
                          "optimizer.lr=0.05", f"data.data_dir={tiny_tree}", *TINY, f"paths.log_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run, record = only_run(tmp_path)
    assert record["status"] == "completed" and record["epochs"] < 40
    assert "val/acc did not improve in the last 2 records" in record["stopped_early"]
    assert f"stopped early at epoch {record['epochs']} of 40: Monitored metric val/acc did not improve" in proc.stdout


def test_tags_are_recorded_and_a_bad_one_is_refused(tiny_tree, tmp_path):
    proc = run_in_process("train", "tags=[baseline,adam]", "trainer.max_epochs=1", f"data.data_dir={tiny_tree}", *TINY,
                          f"paths.log_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run, record = only_run(tmp_path)
    assert record["tags"] == ["baseline", "adam"]
    assert yaml.safe_load((run / "config.yaml").read_text())["tags"] == ["baseline", "adam"]
    refused = run_in_process("train", "tags=5", f"data.data_dir={tiny_tree}", f"paths.log_dir={tmp_path / 'refused'}")
    assert refused.returncode == 2 and "tags=5 is not a list of words" in one_paragraph(refused.stderr)


def test_conf_local_default_is_read_when_present(tiny_tree, tmp_path):
    """A machine's own conf/local/default.yaml (git-ignored) sets what the command line does not."""
    searchpath = search_path_with(tmp_path, "local/default.yaml", f"# @package _global_\ntags: [this_machine]\ndata:\n  data_dir: {tiny_tree}\n")
    proc = run_in_process("train", "--cfg", "job", searchpath)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["tags"] == ["this_machine"] and cfg["data"]["data_dir"] == str(tiny_tree)
    without = yaml.safe_load(run_in_process("train", "--cfg", "job").stdout)
    assert without["tags"] == []
