"""Checkpoints that cannot be used: truncated, unsafe, of another model, of another number of classes."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from conftest import run_in_process


@pytest.fixture(scope="module")
def finished(tiny_tree, tmp_path_factory):
    """A finished one-epoch mlp run."""
    logs = tmp_path_factory.mktemp("ckptlogs")
    proc = run_in_process("train", f"data.data_dir={tiny_tree}", "data.val_size=60", "model=mlp", "trainer.max_epochs=1",
                   "trainer.enable_progress_bar=false", "logger=none", f"paths.log_dir={logs}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (logs / "runs").iterdir()
    return run_dir


def copy_run(run_dir, tmp_path):
    dst = tmp_path / run_dir.name
    shutil.copytree(run_dir, dst)
    return dst


def clear_refusal(proc, *words):
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for w in words:
        assert w in proc.stderr, proc.stderr[-3000:]


class RunsCode:
    """Unpickling this would run a shell command: the classic malicious checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_truncated_checkpoint_is_refused_by_resume_and_eval(finished, tmp_path):
    run = copy_run(finished, tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 3])
    clear_refusal(run_in_process("train", f"resume={run}"), "Cannot read the checkpoint", str(last), "truncated")
    proc = run_in_process("eval", f"ckpt_path={last}")
    clear_refusal(proc, "Cannot read the checkpoint")


def test_a_checkpoint_whose_pickle_runs_code_is_refused_and_runs_nothing(finished, tmp_path):
    run = copy_run(finished, tmp_path)
    marker = tmp_path / "code_ran"
    last = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    ckpt["payload"] = RunsCode(marker)
    torch.save(ckpt, last)
    clear_refusal(run_in_process("train", f"resume={run}"), "Refused to load", "weights_only=True")
    proc = run_in_process("eval", f"ckpt_path={last}")
    clear_refusal(proc, "Refused to load")
    assert not marker.exists()
    torch.load(last, weights_only=False)  # the file really does run code when loaded unsafely
    assert marker.exists()


def test_a_checkpoint_of_another_model_or_class_count_is_refused(finished, tiny_tree, tmp_path):
    last = finished / "checkpoints" / "last.ckpt"
    base = (f"data.data_dir={tiny_tree}", "data.val_size=60", "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
            "logger=none", f"paths.log_dir={tmp_path}", f"+resume_ckpt={last}")
    clear_refusal(run_in_process("train", *base, "model=cnn"), "was written by a different model", "resume=<its run dir>")
    clear_refusal(run_in_process("train", *base, "model=mlp", "model.net.hidden_size=31"), "does not fit this model", "net.1.weight")
    # the same mlp for 12 classes: the last layer tells
    ckpt = torch.load(last, weights_only=True)
    ckpt["state_dict"]["net.3.weight"] = torch.zeros(12, ckpt["state_dict"]["net.3.weight"].shape[1])
    ckpt["state_dict"]["net.3.bias"] = torch.zeros(12)
    twelve = tmp_path / "twelve.ckpt"
    torch.save(ckpt, twelve)
    clear_refusal(run_in_process("train", *base[:-1], "model=mlp", f"+resume_ckpt={twelve}"), "model for 12 classes", "model.num_classes=12")


def test_a_finished_runs_folder_is_never_written_over(finished, tiny_tree, tmp_path):
    saved = {p: p.read_bytes() for p in finished.rglob("*") if p.is_file()}
    proc = run_in_process("train", f"data.data_dir={tiny_tree}", "data.val_size=60", "trainer.max_epochs=1", f"hydra.run.dir={finished}")
    clear_refusal(proc, "holds a finished run", f"resume={finished}")
    assert {p: p.read_bytes() for p in finished.rglob("*") if p.is_file()} == saved


def test_two_runs_in_the_same_second_get_two_folders(tmp_path):
    from mnist99.config import new_folder

    taken = tmp_path / "runs" / "2026-11-28_10-00-00_cnn"
    taken.mkdir(parents=True)
    (taken / "run.yaml").write_text("status: completed\n")
    assert new_folder(str(taken)) == f"{taken}-2"
    assert new_folder(str(tmp_path / "runs" / "fresh")) == str(tmp_path / "runs" / "fresh")
