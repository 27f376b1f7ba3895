"""Beyond the basic launcher: Optuna search (resumable, robust to diverged trials), joblib and submitit."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml

from conftest import ROOT, run_cli, run_in_process, search_path_with

TINY = ("data.val_size=60", "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "logger=csv")


def statuses(log_dir):
    (sweep,) = (log_dir / "multirun").iterdir()
    return sweep, [r["status"] for r in csv.DictReader((sweep / "summary.csv").open())]


@pytest.mark.slow  # two launchers x a two-job sweep in new processes: ~35 s
@pytest.mark.parametrize("launcher", [
    ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", "hydra.launcher.cpus_per_task=1", "hydra.launcher.gpus_per_node=0"],
])
def test_parallel_launchers_run_and_summarise(tiny_tree, tmp_path, launcher):
    proc = run_cli("-m", *launcher, f"data.data_dir={tiny_tree}", *TINY, "model=linear,mlp", f"paths.log_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep, states = statuses(tmp_path)
    assert states == ["completed", "completed"]
    assert (sweep / "summary.md").is_file() and (sweep / "summary.png").is_file()


def optuna_cmd(tiny_tree, tmp_path, db):
    return [sys.executable, str(ROOT / "train.py"), "-m", "hparams_search=optuna", f"data.data_dir={tiny_tree}", *TINY,
            "trainer.max_epochs=4", "hydra.sweeper.n_trials=6", f"hydra.sweeper.storage=sqlite:///{db}", f"paths.log_dir={tmp_path}",
            "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=3"]


def finished(db) -> int:
    try:
        study = optuna.load_study(study_name="mnist99", storage=f"sqlite:///{db}")
    except KeyError:
        return 0
    return sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


@pytest.mark.slow  # three Optuna studies: ~30 s
@pytest.mark.timeout(300)
def test_optuna_search_resumes_to_its_total(tiny_tree, tmp_path):
    """Killed after 2 trials and started again with the same command: 6 evaluated trials in total (the trial
    the kill left running is failed once its heartbeat is stale, and run again)."""
    db = tmp_path / "optuna.db"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(optuna_cmd(tiny_tree, tmp_path, db), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while finished(db) < 2 and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    if first.poll() is None:
        os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    before = finished(db)
    assert 2 <= before < 6
    proc = run_in_process("train", *optuna_cmd(tiny_tree, tmp_path, db)[2:], cwd=tmp_path)  # the same command, started again
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert finished(db) == 6
    sweeps = sorted((tmp_path / "multirun").iterdir())
    assert len(list(sweeps[-1].glob("*/run.yaml"))) == 6 - before
    results = yaml.safe_load((sweeps[-1] / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == {"optimizer.lr", "optimizer.weight_decay", "data.batch_size", "model"}


def test_a_diverged_trial_reports_the_worst_value(tiny_tree, tmp_path):
    """One trial of two diverges: it is recorded as such, counts as 0.0, and the study still ends."""
    searchpath = search_path_with(
        tmp_path, "hparams_search/lr_pair.yaml",
        "# @package _global_\ndefaults:\n  - optuna\nhydra:\n  sweeper:\n    n_trials: 2\n    sampler:\n      seed: 1231\n"
        "    params:\n      optimizer.lr: choice(0.05, 10000000.0)\n      optimizer.weight_decay: 0.0\n"
        "      data.batch_size: 32\n      model: mlp\n")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    proc = run_in_process("train", "-m", searchpath, "hparams_search=lr_pair", "optimizer=sgd",
                          "scheduler=none", "model=mlp", f"data.data_dir={tiny_tree}", *TINY, f"paths.log_dir={tmp_path}",
                          f"hydra.sweeper.storage={storage}")
    sweep, states = statuses(tmp_path)
    assert sorted(states) == ["completed", "diverged"] and proc.returncode == 3, proc.stderr[-3000:]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_params"]["optimizer.lr"] == 0.05 and results["best_value"] > 0
    import optuna

    trials = optuna.load_study(study_name="mnist99", storage=storage).get_trials()
    values = {t.params["optimizer.lr"]: t.value for t in trials}
    assert values[10000000.0] == 0.0 and values[0.05] == results["best_value"]  # the diverged one: the worst accuracy


@pytest.mark.slow  # two DDP jobs of two processes each: ~40 s (one DDP run: test_cli.py)
@pytest.mark.timeout(300)  # a DDP bug shows as a hang
def test_ddp_jobs_inside_a_multirun_leave_no_stray_folders(tiny_tree, tmp_path):
    """Each DDP job's second process writes into its own job folder: two jobs, two folders, nothing else."""
    proc = run_cli("-m", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "model=linear,mlp",
                   f"data.data_dir={tiny_tree}", *TINY, f"paths.log_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["multirun"]
    sweep, states = statuses(tmp_path)
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name.split("_")[0] for p in jobs] == ["0", "1"] and states == ["completed", "completed"]
    assert all((p / "train_ddp_process_1.log").is_file() for p in jobs)


def test_a_finished_study_started_again_runs_nothing_and_still_writes_its_best(tiny_tree, tmp_path):
    db = tmp_path / "study.db"
    cmd = ["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=1", f"hydra.sweeper.storage=sqlite:///{db}",
           f"data.data_dir={tiny_tree}", *TINY, "hydra.sweeper.params.model=linear", f"paths.log_dir={tmp_path}"]
    for _ in range(2):
        proc = run_in_process("train", *cmd, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert finished(db) == 1
    first, again = sorted((tmp_path / "multirun").iterdir())
    assert not list(again.glob("*/run.yaml"))  # nothing ran the second time
    best = yaml.safe_load((again / "optimization_results.yaml").read_text())
    keys = ("best_params", "best_value", "best_trial", "complete_trials")
    assert [best[k] for k in keys] == [yaml.safe_load((first / "optimization_results.yaml").read_text())[k] for k in keys]
