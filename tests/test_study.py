"""One Optuna study, many workers: processes that run the same `-m hparams_search=optuna` command on one
storage (a real PostgreSQL server, SQLite, a journal file) form one study of n_trials in total, never
sample alike, survive a worker killed mid-trial, and write no password anywhere."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from conftest import ROOT, run_in_process, search_path_with
from mnist99.job_names import job_name, short_value
from postgres_server import PostgresServer, server_binaries

TINY = ("data.val_size=60", "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "logger=csv")


@pytest.fixture(scope="module")
def postgres():
    bindir = server_binaries()
    if bindir is None:
        pytest.skip("no PostgreSQL server binary (initdb) on this machine: apt install postgresql")
    server = PostgresServer(bindir).start()
    yield server
    server.stop()


def storage_url(kind: str, tmp_path: Path, request) -> str:
    if kind == "postgresql":
        return request.getfixturevalue("postgres").new_database("study_" + re.sub(r"\W", "_", request.node.name).lower()[-40:])
    return f"sqlite:///{tmp_path / 'study.db'}" if kind == "sqlite" else f"journal:{tmp_path / 'study.log'}"


def load(url: str) -> optuna.Study:
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return optuna.load_study(study_name="mnist99", storage=JournalStorage(JournalFileBackend(url.removeprefix("journal:"))))
    return optuna.load_study(study_name="mnist99", storage=url)


def worker(tiny_tree, log_dir: Path, url: str, n_trials: int, *extra: str) -> subprocess.Popen:
    """`python train.py -m hparams_search=optuna ...` in a new interpreter of one CPU thread, as a user starts a worker."""
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", "hparams_search=optuna", f"hydra.sweeper.n_trials={n_trials}",
           f"hydra.sweeper.storage={url}", f"data.data_dir={tiny_tree}", *TINY, f"paths.log_dir={log_dir}", *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("MNIST99_STORAGE", None)
    return subprocess.Popen(cmd, cwd=log_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def params_of(trials) -> list[tuple]:
    return [tuple(sorted(t.params.items())) for t in trials]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", [  # ~20 s each, slow: .ci/run runs this file's slow tests after the default run
    pytest.param("postgresql", marks=pytest.mark.slow),
    pytest.param("sqlite", marks=pytest.mark.slow),
    pytest.param("journal", marks=pytest.mark.slow),
])
def test_two_workers_form_one_study(tiny_tree, tmp_path, kind, request):
    """Two workers started together with n_trials=8: 8 COMPLETE trials, none failed, no two alike, both exit 0
    in silence; each trial's folder is named by its number and rounded values; the pictures are drawn. On
    PostgreSQL the URL carries a password, typed on the command line: no file and no console shows it."""
    url = storage_url(kind, tmp_path, request)
    workers = [worker(tiny_tree, tmp_path, url, 8)]
    time.sleep(0.5)
    workers.append(worker(tiny_tree, tmp_path, url, 8))
    outputs = [w.communicate(timeout=240) for w in workers]
    for w, (out, err) in zip(workers, outputs):
        assert w.returncode == 0 and "Traceback" not in err, err[-3000:]
    trials = load(url).get_trials()
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 8 and TrialState.FAIL not in [t.state for t in trials]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(set(params_of(complete))) == 8  # no two workers sampled alike
    assert len({t.user_attrs["mnist99.worker"] for t in complete}) == 2  # both worked
    assert len({t.user_attrs["mnist99.sampler_seed"] for t in complete}) == 2  # each with a seed of its own
    folders = sorted(p for p in (tmp_path / "multirun").glob("*/*_*") if p.is_dir())
    assert sorted(int(p.name.split("_")[0]) for p in folders) == sorted(t.number for t in complete)
    for p in folders:  # `3_optimizer.lr=0.001235,optimizer.weight_decay=0.0567,data.batch_size=128,model=cnn`
        lr = re.search(r"optimizer\.lr=([^,]+)", p.name).group(1)
        assert f"{float(lr):.4g}" == lr, p.name
        assert "trainer.max_epochs" not in p.name and "data.data_dir" not in p.name
    sweep = folders[0].parent
    for picture in ("optuna_history.png", "optuna_importances.png"):
        assert (sweep / picture).read_bytes()[:4] == b"\x89PNG" and f"]({picture})" in (sweep / "summary.md").read_text()
    if kind == "postgresql":
        password = request.getfixturevalue("postgres").password
        assert password in url
        leaks = [p for p in tmp_path.rglob("*") if p.is_file() and password.encode() in p.read_bytes()]
        assert not leaks and not any(password in out + err for out, err in outputs), leaks
        assert "mnist99:***@127.0.0.1" in outputs[0][1] + outputs[0][0]


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("kind", "signum"), [  # all slow (~25 s each): .ci/run runs them after the default run
    pytest.param("postgresql", signal.SIGKILL, marks=pytest.mark.slow),
    pytest.param("journal", signal.SIGKILL, marks=pytest.mark.slow),
    pytest.param("sqlite", signal.SIGTERM, marks=pytest.mark.slow),
])
def test_a_worker_stopped_mid_trial_costs_one_trial(tiny_tree, tmp_path, kind, signum, request):
    """SIGKILL one worker while its trial runs: the other worker finds the trial stale by its heartbeat,
    fails it, runs it again, and the study still ends with n_trials COMPLETE trials. SIGTERM (or Ctrl-C):
    the stopped worker gives its trial back itself, exits with 143, and the other runs it."""
    url = storage_url(kind, tmp_path, request)
    fast = ("hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=3", "trainer.max_epochs=3")
    doomed = worker(tiny_tree, tmp_path, url, 6, *fast)
    survivor = worker(tiny_tree, tmp_path, url, 6, *fast)
    killed, deadline = None, time.time() + 120
    while killed is None and time.time() < deadline and doomed.poll() is None:
        try:
            running = load(url).get_trials(states=(TrialState.RUNNING,))
        except KeyError:  # no study yet
            running = []
        mine = [t for t in running if t.user_attrs.get("mnist99.worker", "").endswith(f":{doomed.pid}")]
        if mine:
            os.killpg(doomed.pid, signum)
            killed = mine[0].number
        time.sleep(0.1)
    _, doomed_err = doomed.communicate(timeout=120)
    assert killed is not None, "the first worker never ran a trial"
    out, err = survivor.communicate(timeout=240)
    assert survivor.returncode == 0 and "Traceback" not in err, err[-3000:]
    trials = {t.number: t for t in load(url).get_trials()}
    assert trials[killed].state == TrialState.FAIL
    assert sum(t.state == TrialState.COMPLETE for t in trials.values()) == 6
    (retry,) = [t for t in trials.values() if t.system_attrs.get("failed_trial") == killed]
    assert retry.state == TrialState.COMPLETE and retry.params == trials[killed].params
    if signum == signal.SIGKILL:
        assert f"Trial {killed} gave no heartbeat for 3 s" in err + out and "queued to run again" in err + out
    else:
        assert doomed.returncode == 143 and "Traceback" not in doomed_err, doomed_err[-3000:]
        assert f"Trial {retry.number} (trial {killed} again)" in err + out


def test_grid_sweep_folders_show_what_varies(tiny_tree, tmp_path):
    proc = run_in_process("train", "-m", "model=linear,mlp", "optimizer.lr=0.001,0.01", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                          f"data.data_dir={tiny_tree}", *TINY, f"paths.log_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "multirun").iterdir()
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == [
        "0_model=linear,optimizer.lr=0.001", "1_model=linear,optimizer.lr=0.01", "2_model=mlp,optimizer.lr=0.001", "3_model=mlp,optimizer.lr=0.01"]
    assert (sweep / "2_model=mlp,optimizer.lr=0.001" / "run.yaml").is_file()
    cfg = yaml.safe_load((sweep / "0_model=linear,optimizer.lr=0.001" / "config.yaml").read_text())
    assert cfg["trainer"]["max_epochs"] == 1 and cfg["optimizer"]["lr"] == 0.001


def test_job_names_round_and_keep_only_what_varies():
    overrides = ["optimizer.lr=0.0003754553966912878", "data.batch_size=128", "model=cnn", "trainer.max_epochs=1",
                 "data.data_dir=/a/b", "trainer.enable_progress_bar=False"]
    assert job_name(0, overrides, {"optimizer.lr", "data.batch_size", "model"}) == "0_optimizer.lr=0.0003755,data.batch_size=128,model=cnn"
    assert job_name(7, ["+experiment=fast", "paths.log_dir=/x"], set()) == "7_experiment=fast"  # nothing varies: what it ran
    assert job_name(2, [], set()) == "2"
    assert [short_value(v) for v in ("1e-05", "0.1", "100", "nan", "cnn", "[1,2]")] == ["1e-05", "0.1", "100", "nan", "cnn", "[1,2]"]
    long = job_name(1, [f"k{i}=" + "v" * 30 for i in range(20)], {f"k{i}" for i in range(20)})
    assert len(long) < 255 and long.endswith(",...")


def test_a_storage_that_cannot_be_opened_is_one_paragraph(tiny_tree, tmp_path):
    port = __import__("postgres_server").free_port()
    env_before = os.environ.get("MNIST99_STORAGE")
    try:
        proc = run_in_process("train", "-m", "hparams_search=optuna", f"hydra.sweeper.storage=postgresql://u:hunter2@127.0.0.1:{port}/db",
                              f"data.data_dir={tiny_tree}", *TINY, f"paths.log_dir={tmp_path}")
    finally:
        os.environ.pop("MNIST99_STORAGE", None) if env_before is None else os.environ.update(MNIST99_STORAGE=env_before)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "could not be opened" in proc.stderr and "u:***@127.0.0.1" in proc.stderr and "hunter2" not in proc.stderr + proc.stdout


@pytest.mark.slow  # a worker and two joblib processes, each loading torch: ~30 s
@pytest.mark.timeout(300)
def test_one_worker_runs_trials_in_parallel_with_joblib(tiny_tree, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    w = worker(tiny_tree, tmp_path, url, 4, "hydra/launcher=joblib", "hydra.sweeper.n_jobs=2", "hydra.launcher.n_jobs=2")
    out, err = w.communicate(timeout=240)
    assert w.returncode == 0 and "Traceback" not in err, err[-3000:]
    complete = load(url).get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 4 and len(set(params_of(complete))) == 4
    assert "is launching 2 jobs" in out + err  # two trials at a time


@pytest.mark.slow  # four trials in-process: ~7 s (.ci/run runs it)
def test_the_grid_sampler_runs_each_point_once(tiny_tree, tmp_path):
    """hydra/sweeper/sampler=grid: n_trials is capped at the grid's size, and every point runs once."""
    searchpath = search_path_with(
        tmp_path, "hparams_search/grid.yaml",
        "# @package _global_\ndefaults:\n  - override /hydra/sweeper: mnist99_optuna\n  - override /hydra/sweeper/sampler: grid\n"
        "optimized_metric: val/acc_best\nfailed_value: 0.0\nhydra:\n  mode: MULTIRUN\n  sweeper:\n    n_trials: 10\n    study_name: mnist99\n"
        "    direction: maximize\n    params:\n      model: choice(linear, mlp)\n      optimizer.lr: choice(0.01, 0.1)\n")
    url = f"sqlite:///{tmp_path / 'grid.db'}"
    proc = run_in_process("train", "-m", searchpath, "hparams_search=grid", f"data.data_dir={tiny_tree}",
                          *TINY, f"paths.log_dir={tmp_path}", f"hydra.sweeper.storage={url}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    points = sorted((t.params["model"], t.params["optimizer.lr"]) for t in load(url).get_trials(states=(TrialState.COMPLETE,)))
    assert points == [("linear", 0.01), ("linear", 0.1), ("mlp", 0.01), ("mlp", 0.1)]
