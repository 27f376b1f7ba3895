"""TensorBoard, read as a user's browser reads it: through its HTTP API, from a real server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml

from conftest import run_in_process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read()
        return json.loads(raw) if response.headers.get_content_type() == "application/json" else raw


@pytest.fixture
def dashboard(tiny_tree, tmp_path):
    """A two-epoch run's outputs, served by `tensorboard --logdir` on a free local port."""
    proc = run_in_process("train", f"data.data_dir={tiny_tree}", "data.val_size=60", "trainer.max_epochs=2", "trainer.log_every_n_steps=1",
                   "trainer.enable_progress_bar=false", f"paths.log_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(tmp_path), "--host", "127.0.0.1",
                               "--port", str(port), "--reload_interval", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):  # the server starts, then loads the event files
            try:
                if get(f"{base}/data/runs"):
                    break
            except OSError:
                pass
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.timeout(300)
def test_tensorboard_serves_the_runs_scalars_hparams_and_images(dashboard, tmp_path):
    (run_dir,) = (tmp_path / "runs").iterdir()
    recorded = yaml.safe_load((run_dir / "run.yaml").read_text())["metrics"]  # what the run itself says
    (run,) = get(f"{dashboard}/data/runs")
    assert run.startswith("runs/") and run.endswith("_lenet")

    tags = get(f"{dashboard}/data/plugin/scalars/tags")[run]
    assert {"train/loss", "val/acc", "val/acc_best", "test/acc"} <= set(tags)
    val_acc = get(f"{dashboard}/data/plugin/scalars/scalars?run={run}&tag=val/acc")
    assert len(val_acc) == 2 and val_acc[-1][2] == pytest.approx(recorded["val/acc"])  # one point per epoch, the run's
    assert [s for _, s, _ in val_acc] == sorted({s for _, s, _ in val_acc})

    experiment = get(f"{dashboard}/data/plugin/hparams/experiment", {"experimentName": ""})
    assert {"model", "lr", "batch_size", "seed"} <= {h["name"] for h in experiment["hparamInfos"]}
    groups = get(f"{dashboard}/data/plugin/hparams/session_groups", {
        "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        "colParams": [{"hparam": "model"}, {"metric": {"tag": "test/acc", "group": ""}}], "startIndex": 0, "sliceSize": 10,
    })["sessionGroups"]
    (group,) = groups
    assert group["hparams"]["model"] == "lenet"
    metrics = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
    assert metrics["test/acc"] == pytest.approx(recorded["test/acc"]) and metrics["val/acc_best"] == max(v for _, _, v in val_acc)

    images = get(f"{dashboard}/data/plugin/images/tags")[run]
    assert {"test/confusion_matrix", "test/top_losses"} <= set(images)
    (shown,) = get(f"{dashboard}/data/plugin/images/images?run={run}&tag=test/confusion_matrix&sample=0")
    assert get(f"{dashboard}/data/plugin/images/individualImage?{shown['query']}")[:4] == b"\x89PNG"


def test_the_hparams_file_leaves_tensorboard_following_the_runs_scalars(tmp_path):
    """TensorBoard follows only the last event file of a folder (in name order) while a run writes:
    the hparams file, written at the start (or again on resume, after the run's writer exists),
    sorts first, so the scalars written afterwards still show up live."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    from mnist99.tensorboard import write_hparams_events

    writer = SummaryWriter(tmp_path)
    writer.add_scalar("val/acc", 0.5, 1)
    writer.flush()
    hparams_file = write_hparams_events(tmp_path, {"model": "lenet", "lr": 0.01})
    assert sorted(tmp_path.glob("events.out.tfevents.*"))[0] == hparams_file
    live = EventAccumulator(str(tmp_path))  # as TensorBoard's server reads a run, reloading as it grows
    live.Reload()
    assert "_hparams_/session_start_info" in live.PluginTagToContent("hparams")
    writer.add_scalar("val/acc", 0.75, 2)
    writer.close()
    live.Reload()
    assert [e.value for e in live.Scalars("val/acc")] == [0.5, 0.75]
