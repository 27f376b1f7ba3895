"""`python train.py resume=<run dir>`: the run's own config, the same folder, the same curves."""

from __future__ import annotations

import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import run_in_process


def test_resume_continues_a_run_in_its_own_folder(tiny_tree, tmp_path):
    """A run stopped after epoch 1 of 3 (here: trained for 1 epoch) resumed to 3 epochs: one folder,
    3 epochs, the original overrides kept, and TensorBoard curves without a repeated step."""
    first = run_in_process("train", f"data.data_dir={tiny_tree}", "data.val_size=60", "data.batch_size=32", "model=mlp", "scheduler=none",
                    "trainer.max_epochs=1", "trainer.log_every_n_steps=1", f"paths.log_dir={tmp_path}")
    assert first.returncode == 0, first.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    again = run_in_process("train", f"resume={run_dir}", "trainer.max_epochs=3", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [run_dir.name]
    assert "mnist99: task=mlp model=mlp" in again.stdout
    record = yaml.safe_load((run_dir / "run.yaml").read_text())
    assert record["status"] == "completed" and record["epochs"] == 3
    assert "model=mlp" in record["overrides"] and record["resumed"][0]["command"].startswith("train.py resume=")
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    for tag in ("val/acc", "train/loss"):
        steps = [e.step for e in acc.Scalars(tag)]
        assert len(steps) == len(set(steps)), (tag, steps)
    assert len(acc.Scalars("val/acc")) == 3


def test_resume_of_a_folder_without_a_run_is_refused(tmp_path):
    proc = run_in_process("train", f"resume={tmp_path}")
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
