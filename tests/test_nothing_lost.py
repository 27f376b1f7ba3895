"""Nothing lost: no command that takes a finished run rewrites its folder unless it trains the run further.
Each command runs on a copy of the shared finished run; every file of the copy, and of the run it was copied
from, is byte for byte the same after it, and no file comes or goes."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from conftest import one_paragraph, run_in_process


def snapshot(folder: Path) -> dict[str, str]:
    """Every file of a folder, by its path in it: the sha256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def run_dir(trained_run, tmp_path) -> Path:
    """A copy of the shared run (2 epochs of trainer.max_epochs=2, finished), in a runs/ folder as train.py makes."""
    return Path(shutil.copytree(trained_run, tmp_path / "outputs" / "runs" / trained_run.name))


# (command, its arguments given the run folder, the tiny tree and a scratch folder, exit status, words of its output)
COMMANDS = {
    "eval": ("eval", lambda run, tree, tmp: [f"ckpt_path={run}"], 0, "wrote eval.yaml"),
    "eval of a checkpoint": ("eval", lambda run, tree, tmp: [f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "top_losses=0"], 0,
                             "wrote eval.yaml"),
    "predict": ("predict", lambda run, tree, tmp: [f"ckpt_path={run}", f"inputs={tree / 'testing' / '3'}", f"csv={tmp / 'p.csv'}"],
                0, "wrote"),
    "resume with nothing left": ("train", lambda run, tree, tmp: [f"resume={run}"], 2, "there is nothing left to train"),
    "resume to the epochs it has": ("train", lambda run, tree, tmp: [f"resume={run}", "trainer.max_epochs=2"], 2, "nothing left"),
    "resume past max_steps": ("train", lambda run, tree, tmp: [f"resume={run}", "trainer.max_epochs=5", "trainer.max_steps=10"], 2,
                              "step 22 of trainer.max_steps=10"),
    "resume of its last.ckpt": ("train", lambda run, tree, tmp: [f"resume={run / 'checkpoints' / 'last.ckpt'}"], 2, "nothing left"),
    "resume swapping a group": ("train", lambda run, tree, tmp: [f"resume={run}", "model=cnn", "trainer.max_epochs=3"], 2,
                                "model=cnn cannot swap one"),
    "resume with a bad value": ("train", lambda run, tree, tmp: [f"resume={run}", "trainer.max_epochs=abc"], 2, "trainer.max_epochs"),
    "resume with a misspelt key": ("train", lambda run, tree, tmp: [f"resume={run}", "trainer.max_epoch=3"], 2, "Unknown config key 'trainer.max_epoch'"),
    # refused once the run is built (the weights do not fit the model asked for): put back as it was
    "resume refused by the model": ("train", lambda run, tree, tmp: [f"resume={run}", "trainer.max_epochs=3", "model.net.hidden_size=31"],
                                    2, "does not fit this model"),
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_command_that_trains_nothing_leaves_the_run_as_it_was(name, run_dir, trained_run, tiny_tree, tmp_path):
    command, args, status, said = COMMANDS[name]
    before, shared = snapshot(run_dir), snapshot(trained_run)
    proc = run_in_process(command, *args(run_dir, tiny_tree, tmp_path), cwd=tmp_path)
    assert proc.returncode == status, (proc.stdout[-2000:], proc.stderr[-3000:])
    assert said in (proc.stdout if status == 0 else one_paragraph(proc.stderr)), (proc.stdout[-2000:], proc.stderr[-2000:])
    after = snapshot(run_dir)
    assert sorted(after) == sorted(before), "files came or went"
    assert after == before, [p for p in before if after[p] != before[p]]
    assert snapshot(trained_run) == shared  # the run the copy came from: its config names it, and it is never written to
    assert not (tmp_path / "outputs" / "runs" / f"{run_dir.name}-2").exists()


def test_eval_writes_beside_the_runs_folder_and_a_further_resume_trains_the_copy_alone(run_dir, trained_run, tmp_path):
    """What does write: eval into outputs/evals/, a resume with epochs left into the copy it was given (its config
    still names the folder it was copied from; the checkpoints, logs and record go to the copy)."""
    shared = snapshot(trained_run)
    proc = run_in_process("eval", f"ckpt_path={run_dir}", "top_losses=0", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (evals,) = (tmp_path / "outputs" / "evals").iterdir()
    assert evals.name.endswith(run_dir.name) and {p.name for p in evals.iterdir()} == {"eval.yaml", "confusion_matrix.png", "top_losses.png"}
    further = run_in_process("train", f"resume={run_dir}", "trainer.max_epochs=3", "trainer.enable_progress_bar=false", cwd=tmp_path)
    assert further.returncode == 0, further.stderr[-3000:]
    assert "epochs=3" in further.stdout and snapshot(trained_run) == shared
    steps = [torch.load(r / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] for r in (trained_run, run_dir)]
    assert steps[1] == steps[0] * 3 // 2  # the copy's last.ckpt went on from epoch 2 to 3; the shared run's stayed
    assert [p.name for p in (tmp_path / "outputs" / "runs").iterdir()] == [run_dir.name]
