"""Training on real MNIST images (a subset built from ../shared/data/mnist)."""

from __future__ import annotations

import pytest

from conftest import fit


def test_linear_learns_real_digits(make_cfg, real_subset):
    cfg = make_cfg("model=linear", "optimizer=sgd", "optimizer.lr=0.1", "scheduler=none", "trainer.max_epochs=3",
                   "data.batch_size=64", "logger=none", "trainer.accelerator=cpu", data_dir=real_subset, val_size=500)
    metrics = fit(cfg).metrics
    assert metrics["test/acc"] > 0.85, metrics


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ddp_on_two_processes_matches_one_process(real_subset, tmp_path):
    """trainer=ddp with 2 CPU processes of batch 64 learns the CNN as well (within 0.5 points of
    test accuracy) as one process with the same global batch of 128."""
    import yaml

    from conftest import run_cli

    common = (f"data.data_dir={real_subset}", "data.val_size=500", "model=cnn", "trainer.max_epochs=3",
              "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "logger=csv")
    accs = {}
    for name, extra in (("one", ["data.batch_size=128"]), ("ddp", ["trainer=ddp", "trainer.devices=2", "data.batch_size=64"])):
        proc = run_cli(*common, *extra, f"paths.log_dir={tmp_path / name}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        (run_dir,) = (tmp_path / name / "runs").iterdir()
        accs[name] = yaml.safe_load((run_dir / "run.yaml").read_text())["metrics"]["test/acc"]
    print("DDP vs one process:", accs)
    assert accs["one"] > 0.9 and abs(accs["ddp"] - accs["one"]) <= 0.005, accs
