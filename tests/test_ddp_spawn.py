"""trainer.strategy=ddp_spawn, the way many users (and lightning-hydra-template's tests) run DDP on one machine:
Lightning pickles the trainer, the module, the datamodule and the callbacks into new processes. It trains and
tests like ddp, alone and as the jobs of a -m sweep, with a quiet console and a complete run.yaml. Slow (each fit
and test starts two interpreters): .ci/run runs it after the default run."""

from __future__ import annotations

import pickle

import pytest
import yaml

from conftest import run_in_process

SPAWN = ("trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp_spawn", "data.batch_size=32")


def test_what_a_spawned_process_gets_pickles(make_cfg):
    """The module holds the optimizer's and the schedule's factories: Hydra's own partials refuse to be pickled."""
    from mnist99.build import build

    parts = build(make_cfg("model=cnn", "scheduler=cosine"))
    for part in (parts.model, parts.datamodule, *parts.trainer.callbacks):
        pickle.loads(pickle.dumps(part))


@pytest.mark.slow
def test_ddp_spawn_trains_and_tests(tiny_tree, tmp_path):
    proc = run_in_process("train", *SPAWN, "trainer.max_epochs=2", f"data.data_dir={tiny_tree}", f"paths.log_dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    record = yaml.safe_load((run_dir / "run.yaml").read_text())
    assert record["status"] == "completed" and record["epochs"] == 2 and record["metrics"]["test/acc"] > 0.5
    assert record["metrics"]["fit_seconds"] > 0 and (run_dir / "checkpoints" / "last.ckpt").is_file()
    console = proc.stdout + proc.stderr
    for noise in ("GPU available", "Initializing distributed", "distributed_backend", "LeafSpec", "sync_dist=True"):
        assert noise not in console, noise  # the spawned processes are as quiet as this one


@pytest.mark.slow
def test_ddp_spawn_jobs_of_a_sweep(tiny_tree, tmp_path):
    proc = run_in_process("train", "-m", *SPAWN, "trainer.max_epochs=1", "optimizer.lr=0.01,0.003", f"data.data_dir={tiny_tree}",
                          f"paths.log_dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [yaml.safe_load(p.read_text()) for p in (tmp_path / "multirun").glob("*/*/run.yaml")]
    assert len(records) == 2 and all(r["status"] == "completed" and "test/acc" in r["metrics"] for r in records)


def test_an_error_of_ours_in_a_spawned_process_comes_back_as_itself(tmp_path):
    """torch hands a spawned process's exception to this one as text (ProcessRaisedException): a divergence there
    is still the one-paragraph divergence, not a crash with a traceback."""
    from torch.multiprocessing.spawn import ProcessRaisedException

    from mnist99.pipeline import ending

    said = "The training loss became nan at step 7 (epoch 0), so the run was stopped: it diverged."
    text = f"\n\n-- Process 0 terminated with the following error:\nTraceback (most recent call last):\n  ...\nmnist99.errors.DivergedError: {said}\n"
    outcome = ending(ProcessRaisedException(text, 0, 1234), tmp_path, trained=True)
    assert outcome.status == "diverged" and outcome.message == said
    other = ending(ProcessRaisedException(text.replace("mnist99.errors.DivergedError", "RuntimeError"), 0, 1234), tmp_path, trained=True)
    assert other.status == "crashed"
