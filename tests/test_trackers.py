"""logger=mlflow on a real store: the local SQLite store with no server, a real `mlflow server` on a
PostgreSQL database, several loggers at once, a sweep as one experiment (a missing extra:
test_first_contact.py). Everything is read back through MlflowClient or MLflow's REST API; nothing is mocked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, run_in_process
from postgres_server import free_port

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed: pip install -e '.[mlflow]'")
from mlflow.tracking import MlflowClient

TINY = ("data.val_size=60", "trainer.max_epochs=2", "trainer.enable_progress_bar=false", "model=linear", "data.batch_size=32",
        "trainer.log_every_n_steps=1")


def store(log_dir: Path) -> str:
    return f"sqlite:///{log_dir / 'mlflow' / 'mlflow.db'}"


def runs_of(client: MlflowClient, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def check_run(client: MlflowClient, run) -> None:
    """Params from config.yaml, metrics per step, tags, and the run's artifacts."""
    assert run.info.status == "FINISHED"
    assert run.data.params["optimizer.lr"] == "0.01" and run.data.params["model._target_"] == "mnist99.models.classifier.Classifier"
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) >= 4  # per step: 2 epochs of 2 or more
    assert "test/acc" in run.data.metrics and "val/acc_best" in run.data.metrics
    tags = run.data.tags
    assert tags["model"] == "linear" and tags["task"] == "linear" and tags["machine"] and tags["git_commit"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "run.yaml", "confusion_matrix.png", "top_losses.png"} <= artifacts


def serve(backend: str, tmp_path: Path) -> tuple[subprocess.Popen, str]:
    """`mlflow server` (what `mlflow ui` runs) on a free loopback port, waited for until it answers."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend, "--host", "127.0.0.1",
                             "--port", str(port), "--artifacts-destination", str(tmp_path / "served-artifacts"), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "mlflow-server.log", "wb"), start_new_session=True)
    url, deadline = f"http://127.0.0.1:{port}", time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"mlflow server did not start: {(tmp_path / 'mlflow-server.log').read_text()[-2000:]}")
        time.sleep(0.5)


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def rest_runs(url: str, experiment: str) -> list[dict]:
    with urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name={urllib.parse.quote(experiment)}") as r:
        exp_id = json.load(r)["experiment"]["experiment_id"]
    request = urllib.request.Request(f"{url}/api/2.0/mlflow/runs/search", data=json.dumps({"experiment_ids": [exp_id]}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as r:
        return json.load(r)["runs"]


def test_a_run_in_the_local_store(tiny_tree, tmp_path):
    """No server named: the run lands in outputs/mlflow (SQLite and artifacts), and run.yaml says where."""
    proc = run_in_process("train", "logger=mlflow", "tags=[baseline]", f"data.data_dir={tiny_tree}", *TINY, f"paths.log_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(store(tmp_path))
    (run,) = runs_of(client, "mnist99")
    check_run(client, run)
    assert run.data.tags["tags"] == "baseline" and run.data.tags["baseline"] == "true"
    (folder,) = (tmp_path / "runs").iterdir()
    assert run.info.run_name == folder.name
    assert run.info.run_id in yaml.safe_load((folder / "run.yaml").read_text())["loggers"]["mlflow"]


def test_a_sweep_is_one_experiment_and_every_logger_holds_every_run(tiny_tree, tmp_path):
    proc = run_in_process("train", "-m", "seed=0,1", "logger=[tensorboard,mlflow]", f"data.data_dir={tiny_tree}", *TINY,
                          f"paths.log_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "multirun").iterdir()
    runs = runs_of(MlflowClient(store(tmp_path)), f"sweep {sweep.name}")
    assert sorted(r.info.run_name for r in runs) == ["0_seed=0", "1_seed=1"]
    for job in ("0_seed=0", "1_seed=1"):
        assert list((sweep / job).glob("events.out.tfevents.*"))  # TensorBoard's too
        assert set(yaml.safe_load((sweep / job / "run.yaml").read_text())["loggers"]) == {"tensorboard", "mlflow"}


@pytest.mark.slow  # an MLflow server's start-up (~10 s) and a run against it
@pytest.mark.timeout(300)
def test_mlflow_ui_serves_the_local_store(tiny_tree, tmp_path):
    """What `mlflow ui` shows for outputs/mlflow: the run, by name, through the REST API on loopback."""
    proc = run_in_process("train", "logger=mlflow", f"data.data_dir={tiny_tree}", *TINY, f"paths.log_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    server, url = serve(store(tmp_path), tmp_path)
    try:
        (run,) = rest_runs(url, "mnist99")
        assert run["info"]["run_name"] == next((tmp_path / "runs").iterdir()).name
    finally:
        stop(server)


@pytest.mark.slow  # PostgreSQL, an MLflow server on it, a run in a new interpreter: ~40 s
@pytest.mark.timeout(300)
def test_a_run_on_a_real_mlflow_server_with_a_database(tiny_tree, tmp_path, request):
    from postgres_server import PostgresServer, server_binaries

    if server_binaries() is None:
        pytest.skip("no PostgreSQL server binary (initdb) on this machine")
    db = PostgresServer(server_binaries()).start()
    request.addfinalizer(db.stop)
    server, url = serve(db.new_database("tracking"), tmp_path)
    try:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "logger=mlflow", f"logger.mlflow.tracking_uri={url}",
                               f"data.data_dir={tiny_tree}", *TINY, f"paths.log_dir={tmp_path}"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stderr[-3000:]
        client = MlflowClient(url)
        (run,) = runs_of(client, "mnist99")
        check_run(client, run)
        assert (tmp_path / "served-artifacts").is_dir() and not (tmp_path / "mlflow").exists()  # the server's, not a local store
    finally:
        stop(server)


@pytest.mark.slow  # W&B's own process starts and syncs offline: ~15 s (.ci/run runs it)
@pytest.mark.timeout(300)
def test_wandb_runs_offline_and_tries_no_network(tiny_tree, tmp_path):
    """logger=wandb: the run's config, metrics and pictures on disk in wandb/offline-run-*, and not one
    connection to the W&B server it was pointed at (a listener here that counts them)."""
    pytest.importorskip("wandb", reason="the wandb extra is not installed: pip install -e '.[wandb]'")
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    connections, done = [], threading.Event()

    def count() -> None:
        while not done.is_set():
            try:
                connections.append(listener.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=count, daemon=True)
    thread.start()
    env = {**os.environ, "WANDB_BASE_URL": f"http://127.0.0.1:{listener.getsockname()[1]}", "WANDB_API_KEY": "x" * 40}
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "logger=wandb", "tags=[offline]", f"data.data_dir={tiny_tree}", *TINY,
                           f"paths.log_dir={tmp_path}"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    done.set()
    thread.join()
    listener.close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert connections == []
    (run_dir,) = (tmp_path / "runs").iterdir()
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    record = (next(offline.glob("run-*.wandb"))).read_bytes()
    assert b"optimizer.lr" in record and b"test/acc" in record and b"val/acc_best" in record  # config and metrics
    assert list((offline / "files" / "media" / "images").glob("test/confusion_matrix*.png"))
    assert yaml.safe_load((run_dir / "run.yaml").read_text())["loggers"]["wandb"] == str(offline)
