"""The default recipe scales to the data: on a folder of 300 real MNIST training digits per class (written by
scripts/idx_to_folder.py, tested on 100 per class), `python train.py data=folder data.data_dir=<it>` trains the
epochs its train_images need (40, about as many optimizer steps as MNIST's 2 epochs) and passes 97%. Slow
(about 30 s of fit on a 2-core CPU): .ci/run runs it after the default run."""

from __future__ import annotations

import pytest
import yaml

from conftest import run_in_process, run_script_in_process


@pytest.mark.slow
def test_the_default_recipe_trains_a_small_folder_as_long_as_mnist(shared_mnist, tmp_path):
    folder = tmp_path / "mnist_300"
    made = run_script_in_process("idx_to_folder", str(shared_mnist), str(folder), "--train-per-class", "300", "--test-per-class", "100")
    assert made.returncode == 0, made.stderr[-2000:]
    assert sum(1 for _ in (folder / "train").rglob("*.png")) == 3000 and sum(1 for _ in (folder / "test").rglob("*.png")) == 1000
    proc = run_in_process("train", "data=folder", f"data.data_dir={folder}", f"paths.log_dir={tmp_path / 'logs'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "40 epochs of 3,000 training images" in proc.stdout
    (run_dir,) = (tmp_path / "logs" / "runs").iterdir()
    record = yaml.safe_load((run_dir / "run.yaml").read_text())
    assert record["epochs"] == 40 and record["metrics"]["test/acc"] >= 0.97, record["metrics"]
