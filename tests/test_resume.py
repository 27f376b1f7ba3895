"""`python train.py resume=<run dir>`: the run's own config, the same folder, the same curves, the console of a
new run; a run with nothing left to train is refused, with the command that trains it further."""

from __future__ import annotations

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import one_paragraph, run_in_process
from mnist99.checkpoints import nothing_left


def test_resume_continues_a_run_in_its_own_folder(tiny_tree, tmp_path):
    """A run stopped after epoch 1 of 3 (here: trained for 1 epoch) resumed to 3 epochs: one folder,
    3 epochs, the original overrides kept, and TensorBoard curves without a repeated step."""
    first = run_in_process("train", f"data.data_dir={tiny_tree}", "data.val_size=60", "data.batch_size=32", "model=mlp", "scheduler=none",
                    "trainer.max_epochs=1", "trainer.log_every_n_steps=1", f"paths.log_dir={tmp_path}")
    assert first.returncode == 0, first.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    record = (run_dir / "run.yaml").read_text()
    done = run_in_process("train", f"resume={run_dir}", cwd=tmp_path)  # its 1 epoch trained: nothing left
    said = one_paragraph(done.stderr)
    assert done.returncode == 2 and "there is nothing left to train" in said and "at the end of epoch 1 of 1 (trainer.max_epochs=1)" in said
    assert f"python train.py resume={run_dir} trainer.max_epochs=3" in said and f"python eval.py ckpt_path={run_dir}" in said
    assert (run_dir / "run.yaml").read_text() == record
    again = run_in_process("train", f"resume={run_dir}", "trainer.max_epochs=3", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    # the console of a new run: the messages alone, not Hydra's [time][module][INFO] lines (train.log keeps those)
    lines = (again.stdout + again.stderr).splitlines()
    assert any(line.startswith("Resumed from ") for line in lines), again.stdout
    for noise in ("[INFO]", "GPU available", "TPU available", "💡", "Tip:", "Restoring states"):
        assert not [line for line in lines if noise in line], (noise, again.stdout)
    assert not [line for line in lines if line.startswith("[20")], again.stdout
    assert "[mnist99.models.classifier][INFO] - Resumed from" in (run_dir / "train.log").read_text()
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


def state(epochs: int, step: int, **entry) -> dict:
    """A Lightning checkpoint's counters: `epochs` whose training ended, `step` optimizer steps."""
    return {"epoch": max(epochs - 1, 0), "global_step": step, "mnist99": entry,
            "loops": {"fit_loop": {"epoch_progress": {"current": {"processed": epochs, "completed": max(epochs - 1, 0)}}}}}


@pytest.mark.parametrize("checkpoint, max_epochs, max_steps, record, left", [
    (state(2, 22), 2, -1, None, "the end of epoch 2 of 2 (trainer.max_epochs=2)"),
    (state(2, 22), 4, -1, None, None),  # trained further
    (state(1, 15), 2, -1, None, None),  # stopped in epoch 2 (Ctrl-C): its end is left
    (state(2, 22), -1, -1, None, None),  # no end
    (state(2, 22), 4, 22, None, "step 22 of trainer.max_steps=22"),
    (state(2, 22), None, 30, None, None),
    # trainer.max_epochs=null: the length the fit ran to (the checkpoint's entry), else the run's record
    (state(2, 22, max_epochs=2), None, -1, None, "the end of epoch 2 of 2 (the epochs trainer.max_epochs=null set from the data)"),
    (state(1, 11, max_epochs=2), None, -1, None, None),
    (state(2, 22), None, -1, {"status": "completed", "epochs": 2}, "the end of epoch 2, where the run completed"),
    (state(2, 22), None, -1, {"status": "interrupted", "epochs": 2}, None),
    (state(1, 11), None, -1, {"status": "completed", "epochs": 2}, None),  # an earlier checkpoint of the run
    (state(2, 22), None, -1, None, None),  # nothing says: it trains
])
def test_what_is_left_to_train_is_decided_as_lightning_does(checkpoint, max_epochs, max_steps, record, left):
    assert nothing_left(checkpoint, max_epochs, max_steps, record) == left
