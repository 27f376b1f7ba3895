"""Checkpoints that cannot be used, each said in its own words: not a checkpoint at all, truncated, unsafe, a torch
file of another program, weights only, of another model, of another number of classes. And one that can: a .ckpt
copied alone, which resume= continues in a new run folder."""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile

import pytest
import torch
import yaml

from conftest import ROOT, one_paragraph, run_in_process


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


def refused(proc, *words) -> str:
    """The one paragraph of a refusal (exit status 2), which says all of `words`."""
    assert proc.returncode == 2, (proc.stdout[-2000:], proc.stderr[-2000:])
    said = one_paragraph(proc.stderr)
    for w in words:
        assert w in said, (w, said)
    return said


def test_a_truncated_checkpoint_is_refused_by_resume_eval_and_predict(finished, tmp_path):
    run = copy_run(finished, tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 3])
    said = refused(run_in_process("train", f"resume={run}"), "Cannot read the checkpoint", str(last), "truncated",
                   "no central directory")
    assert "miniz" not in said and said.endswith("or copy it again.")  # our sentences, whole; not torch's, cut
    refused(run_in_process("eval", f"ckpt_path={last}"), "Cannot read the checkpoint", "truncated")
    refused(run_in_process("predict", f"ckpt_path={last}", f"inputs={ROOT / 'README.md'}"), "truncated")
    last.write_bytes(b"")
    refused(run_in_process("eval", f"ckpt_path={last}"), "truncated (it is empty: 0 bytes)")


def test_a_file_that_is_no_checkpoint_at_all_is_named_as_such(finished, tmp_path):
    readme = ROOT / "README.md"
    for said in (refused(run_in_process("eval", f"ckpt_path={readme}"), "is neither a run folder nor a checkpoint", "'# mn'"),
                 refused(run_in_process("train", f"resume={readme}"), f"resume={readme}", "is neither a run folder nor a checkpoint"),
                 refused(run_in_process("predict", f"ckpt_path={readme}", f"inputs={readme}"), "is neither a run folder nor a checkpoint")):
        assert "Python objects" not in said and "does not exist" not in said
    archive = tmp_path / "notes.ckpt"  # a zip, of something else
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("notes.txt", "not weights")
    refused(run_in_process("eval", f"ckpt_path={archive}"), "is not a checkpoint", "a zip archive, but not one torch.save wrote",
            "notes.txt")


def test_a_torch_file_of_another_program_is_named_as_such(finished, tmp_path):
    """torch.save(model.state_dict()): a torch file, but no Lightning checkpoint; and a Lightning checkpoint saved
    with the weights only, which eval takes but resume cannot continue."""
    state = torch.load(finished / "checkpoints" / "last.ckpt", weights_only=True)
    bare = tmp_path / "weights.pt"
    torch.save(state["state_dict"], bare)
    said = refused(run_in_process("eval", f"ckpt_path={bare}"), "is a PyTorch file, but not a Lightning checkpoint",
                   "all tensors, as torch.save(model.state_dict()) writes", "another program")
    assert "truncated" not in said and "Python objects" not in said
    refused(run_in_process("train", f"resume={bare}"), "not a Lightning checkpoint")
    weights_only = copy_run(finished, tmp_path) / "checkpoints" / "weights.ckpt"  # what Lightning leaves out of one
    torch.save({k: v for k, v in state.items() if k not in ("callbacks", "optimizer_states", "lr_schedulers")}, weights_only)
    refused(run_in_process("train", f"resume={weights_only}"), "holds the weights only", "save_weights_only=true")


def test_a_checkpoint_copied_alone_is_resumed_into_a_new_run_folder(finished, tmp_path):
    """resume=<a lone .ckpt>: its stored config goes on training in a new folder under paths.log_dir/runs/; the lone
    file and the run it was copied from are left as they are."""
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in finished.rglob("*") if p.is_file()}
    lone = tmp_path / "alone" / "model.ckpt"
    lone.parent.mkdir()
    shutil.copy(finished / "checkpoints" / "last.ckpt", lone)
    same = lone.read_bytes()
    again = refused(run_in_process("train", f"resume={lone}", f"paths.log_dir={tmp_path / 'logs'}", cwd=tmp_path),
                    "nothing left to train", f"python train.py resume={lone} trainer.max_epochs=3")
    assert "write over the run's record" not in again and not (tmp_path / "logs").exists()
    proc = run_in_process("train", f"resume={lone}", "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
                          f"paths.log_dir={tmp_path / 'logs'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "logs" / "runs").iterdir()
    assert run.name.endswith("_mlp") and "epochs=2" in proc.stdout
    record = yaml.safe_load((run / "run.yaml").read_text())
    assert record["status"] == "completed" and record["epochs"] == 2 and record["resumed"][0]["from"] == str(lone)
    assert "+hydra=default" not in record["overrides"]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["paths"]["output_dir"] == str(run) and config["callbacks"]["model_checkpoint"]["dirpath"] == str(run / "checkpoints")
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2 * torch.load(lone, weights_only=True)["global_step"]
    assert lone.read_bytes() == same and {p.name for p in lone.parent.iterdir()} == {"model.ckpt"}
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in finished.rglob("*") if p.is_file()} == before
    # one written without a config of its own cannot be continued alone
    state = torch.load(lone, weights_only=True)
    del state["mnist99"]
    torch.save(state, lone)
    refused(run_in_process("train", f"resume={lone}", "trainer.max_epochs=3"), "holds no config of its own",
            "Put it back in its run's checkpoints/ folder")


def test_a_checkpoint_whose_pickle_runs_code_is_refused_and_runs_nothing(finished, tmp_path):
    run = copy_run(finished, tmp_path)
    marker = tmp_path / "code_ran"
    last = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    ckpt["payload"] = RunsCode(marker)
    torch.save(ckpt, last)
    said = refused(run_in_process("train", f"resume={run}"), "Refused to load", "weights_only=True", "it names posix.system")
    assert "truncated" not in said
    refused(run_in_process("eval", f"ckpt_path={last}"), "Refused to load", "Python objects that loading would have to run")
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
