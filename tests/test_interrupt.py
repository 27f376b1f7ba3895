"""Ctrl-C or SIGTERM while training: the state is saved, the message says how to resume, and the
resumed run ends exactly where an unstopped one does. Ctrl-C or SIGTERM anywhere else (torch loading,
MNIST being built, the sanity check, the test, eval and predict): one paragraph, status 130 or 143,
nothing half-done kept."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import lightning as L
import pytest
import torch
import yaml
from omegaconf import open_dict

from conftest import ROOT, fit, one_paragraph, run_in_process
from test_prepare import leftovers, synthetic  # noqa: F401 - synthetic is a fixture
from mnist99.data import prepare


class SignalAt(L.Callback):
    """Sends a signal to this process at the end of one training step, as a user or a scheduler would."""

    def __init__(self, step: int, signum: int):
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def weights(ckpt):
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_run_stopped_mid_epoch_resumes_to_the_same_weights_and_metrics(make_cfg, tmp_path, signum):
    """3 epochs of 11 steps, stopped at step 16 (epoch 2 of 3), then resumed: the same final weights,
    optimizer and metrics as a run never stopped, with augmentation drawing random shifts all along."""

    def cfg_in(folder, *extra):
        cfg = make_cfg("model=mlp", "augment=shift", "data.batch_size=32", "trainer.max_epochs=3", "trainer.deterministic=true",
                       "logger=none", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu", *extra)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / folder)
        return cfg

    # the handlers this process had before the runs (Python's default, or SIG_IGN under nohup or in
    # a shell's background job), which each run puts back
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    whole = fit(cfg_in("whole")).metrics
    stopped = fit(cfg_in("stopped"), SignalAt(16, signum))
    saved = tmp_path / "stopped" / "checkpoints" / "last.ckpt"
    assert stopped.status == "interrupted" and yaml.safe_load((tmp_path / "stopped" / "run.yaml").read_text())["status"] == "interrupted"
    assert f"resume={tmp_path / 'stopped'}" in stopped.message and "epoch 1, batch 5 of 11" in stopped.message
    assert stopped.signum == signum and torch.load(saved, weights_only=True)["global_step"] == 16
    assert {s: signal.getsignal(s) for s in before} == before  # Ctrl-C and SIGTERM are the user's again

    cfg = cfg_in("stopped")
    with open_dict(cfg):
        cfg.resume_ckpt = str(saved)
    resumed = fit(cfg).metrics
    for key in ("test/acc", "test/loss", "val/acc", "val/acc_best", "epochs"):
        assert resumed[key] == pytest.approx(whole[key], abs=1e-6), key
    a, b = (torch.load(tmp_path / f / "checkpoints" / "last.ckpt", weights_only=True) for f in ("whole", "stopped"))
    assert a["global_step"] == b["global_step"] == 33
    for name, tensor in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][name], tensor, rtol=0, atol=1e-6, msg=name)
    exp_avg = lambda ckpt: [s["exp_avg"] for s in ckpt["optimizer_states"][0]["state"].values()]  # noqa: E731
    for x, y in zip(exp_avg(a), exp_avg(b)):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-6)


def test_ctrl_c_on_the_command_line_saves_says_how_to_resume_and_resume_finishes(tiny_tree, tmp_path):
    args = [sys.executable, str(ROOT / "train.py"), f"data.data_dir={tiny_tree}", "data.val_size=60", "data.batch_size=8",
            "model=mlp", "trainer.max_epochs=10", "trainer.enable_progress_bar=false", "logger=csv", f"paths.log_dir={tmp_path}"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("runs/*/checkpoints/epoch*.ckpt")):  # training is under way
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Stopped by Ctrl-C (SIGINT)" in err and "python train.py resume=" in err and "Traceback" not in err
    (run_dir,) = (tmp_path / "runs").iterdir()
    record = yaml.safe_load((run_dir / "run.yaml").read_text())
    assert record["status"] == "interrupted"
    stopped_at = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert 0 < stopped_at < 10 * 43  # stopped in the second epoch or soon after: ~0.6 s an epoch here

    again = run_in_process("train", f"resume={run_dir}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    record = yaml.safe_load((run_dir / "run.yaml").read_text())
    assert record["status"] == "completed" and record["epochs"] == 10


# Ctrl-C outside a training step: Lightning alone would exit with status 1, without a word, leaving
# run.yaml at "running"; SIGTERM would end the process where it stood (mnist99.stopping).

def run_expecting_ctrl_c(command: str, *args: str) -> subprocess.CompletedProcess:
    try:
        return run_in_process(command, *args)
    except KeyboardInterrupt:  # caught here, or pytest would take it as the user's and stop the session
        pytest.fail("the Ctrl-C escaped the command as a KeyboardInterrupt")


@pytest.fixture
def sigterm_default():
    """SIGTERM as a command finds it when started by a shell or a scheduler (the command puts in
    its own handler; run_in_process puts this one back after it)."""
    before = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGTERM, before)


def stop(signum: int) -> None:
    """What the user or a scheduler does: Ctrl-C raises KeyboardInterrupt where the process stands
    (raised, since a shell's background job ignores a real SIGINT); SIGTERM is sent for real."""
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    # with no handler of the command's, a real SIGTERM would end the whole pytest session
    assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN), "the command does not handle SIGTERM"
    os.kill(os.getpid(), signum)


def stopped_by(signum: int) -> str:
    return "Stopped by Ctrl-C (SIGINT)" if signum == signal.SIGINT else "Stopped by SIGTERM"


SIGNALS = pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "sigterm"])


@SIGNALS
def test_a_stop_while_mnist_is_built_ends_in_one_paragraph_and_leaves_nothing_behind(synthetic, tmp_path, monkeypatch,
                                                                                     sigterm_default, signum):
    src, _ = synthetic
    real_save, calls = prepare._save_png, {"n": 0}

    def save_then_stop(image, path):  # stopped at the 16th PNG of the first run's data
        calls["n"] += 1
        real_save(image, path)
        if calls["n"] == 16:
            stop(signum)

    monkeypatch.setattr(prepare, "_save_png", save_then_stop)
    monkeypatch.setattr(prepare, "PNG_WORKERS", 1)  # written in this process, where the patch is
    data_dir, logs = tmp_path / "mnist_png", tmp_path / "logs"
    handler = signal.getsignal(signal.SIGINT)
    proc = run_expecting_ctrl_c("train", f"data.data_dir={data_dir}", f"data.source={src}", "model=linear", "trainer.max_epochs=1",
                                "trainer.enable_progress_bar=false", "logger=csv", f"paths.log_dir={logs}")
    assert proc.returncode == 128 + signum, proc.stderr[-3000:]
    assert f"{stopped_by(signum)} before training began" in one_paragraph(proc.stderr)
    assert not data_dir.exists() and leftovers(tmp_path, "mnist_png") == []  # no half-written tree
    assert not list(logs.rglob("run.yaml")) and not list(logs.glob("runs/*"))  # no run folder to pick up later
    assert signal.getsignal(signal.SIGINT) is handler  # as before the run: Lightning leaves Ctrl-C ignored


@SIGNALS
def test_a_stop_during_the_test_keeps_the_trained_run_and_resume_tests_it(tiny_tree, tmp_path, monkeypatch, sigterm_default, signum):
    from mnist99.models.classifier import ClassifierBase

    monkeypatch.setattr(ClassifierBase, "on_test_start", lambda self: stop(signum), raising=False)
    proc = run_expecting_ctrl_c("train", f"data.data_dir={tiny_tree}", "data.val_size=60", "model=mlp", "trainer.max_epochs=2",
                                "trainer.enable_progress_bar=false", "logger=csv", f"paths.log_dir={tmp_path}")
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert proc.returncode == 128 + signum, proc.stderr[-3000:]
    assert f"{stopped_by(signum)} at once" in proc.stderr and f"python train.py resume={run_dir}" in proc.stderr
    assert "Traceback" not in proc.stderr
    record = yaml.safe_load((run_dir / "run.yaml").read_text())
    assert record["status"] == "interrupted" and "test/acc" not in record.get("metrics", {})
    trained = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert trained["epoch"] == 1 and trained["global_step"] > 0

    monkeypatch.undo()
    again = run_in_process("train", f"resume={run_dir}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    record = yaml.safe_load((run_dir / "run.yaml").read_text())
    assert record["status"] == "completed" and record["epochs"] == 2 and record["metrics"]["test/acc"] > 0.5
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == trained["global_step"]


@SIGNALS
def test_a_stop_during_the_sanity_check_of_a_new_run_leaves_no_run_folder(tiny_tree, tmp_path, monkeypatch, sigterm_default, signum):
    """Inside `fit` before the first step: Lightning's own SIGTERM handler is in place, and calls mnist99's."""
    from mnist99.models.classifier import ClassifierBase

    monkeypatch.setattr(ClassifierBase, "on_validation_start", lambda self: stop(signum), raising=False)
    proc = run_expecting_ctrl_c("train", f"data.data_dir={tiny_tree}", "data.val_size=60", "model=mlp", "trainer.max_epochs=2",
                                "trainer.enable_progress_bar=false", "logger=csv", f"paths.log_dir={tmp_path}")
    assert proc.returncode == 128 + signum, proc.stderr[-3000:]
    assert f"{stopped_by(signum)} before training began" in proc.stderr and "Traceback" not in proc.stderr
    assert list((tmp_path / "runs").iterdir()) == []


def default_signals() -> None:
    for s in (signal.SIGINT, signal.SIGTERM):  # as a terminal's command has them (a shell's `&` would ignore Ctrl-C)
        signal.signal(s, signal.SIG_DFL)


@SIGNALS
def test_a_stop_while_the_training_stack_loads_leaves_no_run_folder(tiny_tree, tmp_path, signum):
    """The first seconds of every run import torch and Lightning: a real process, stopped there. Python's
    -X importtime names each module as its import ends: the signal goes once torch's own modules come
    in, and torchmetrics and torchvision, which the stack loads after torch, never do."""
    args = [sys.executable, "-X", "importtime", str(ROOT / "train.py"), f"data.data_dir={tiny_tree}", f"paths.log_dir={tmp_path}"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=default_signals)
    loaded = []
    for line in proc.stderr:  # "import time: self [us] | cumulative | module"
        loaded.append(line.rsplit("|", 1)[-1].strip())
        if loaded[-1].startswith("torch."):
            break
    assert proc.poll() is None and "mnist99.config" in loaded, loaded[-20:]  # the command checked its config; torch is loading
    proc.send_signal(signum)
    err = proc.stderr.read()
    proc.wait(timeout=60)
    loaded += [line.rsplit("|", 1)[-1].strip() for line in err.splitlines() if line.startswith("import time:")]
    assert proc.returncode == 128 + signum, err[-3000:]
    assert not [m for m in loaded if m.startswith(("torchmetrics", "torchvision"))]  # stopped while the stack loaded
    said = "\n".join(line for line in err.splitlines() if not line.startswith("import time:"))
    assert f"{stopped_by(signum)} before training began" in one_paragraph(said)
    assert list((tmp_path / "runs").iterdir()) == []


def test_ctrl_c_before_a_resumed_run_trains_leaves_its_folder_as_it_was(trained_run, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    before = {f: (run_dir / f).read_bytes() for f in ("run.yaml", "config.yaml", "checkpoints/last.ckpt")}

    def ctrl_c(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr("mnist99.build.build_model", ctrl_c)  # after the run's record is written, before the Trainer
    proc = run_expecting_ctrl_c("train", f"resume={run_dir}", "trainer.max_epochs=3")
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert "Stopped by Ctrl-C (SIGINT) before training began" in proc.stderr and "Traceback" not in proc.stderr
    assert {f: (run_dir / f).read_bytes() for f in before} == before


@SIGNALS
@pytest.mark.parametrize("command, library, what", [("eval", "mnist99.evaluate.evaluate", "the evaluation"),
                                                    ("predict", "mnist99.predict.predict", "the predictions")])
def test_a_stop_ends_eval_and_predict_in_one_line(trained_run, tiny_tree, monkeypatch, sigterm_default, command, library, what, signum):
    monkeypatch.setattr(library, lambda *args, **kwargs: stop(signum))
    inputs = [f"inputs={tiny_tree / 'testing' / '3'}"] if command == "predict" else []
    proc = run_expecting_ctrl_c(command, f"ckpt_path={trained_run}", *inputs)
    assert proc.returncode == 128 + signum, proc.stderr[-3000:]
    assert f"{stopped_by(signum)} before {what} finished" in one_paragraph(proc.stderr)


@SIGNALS
def test_a_stop_while_a_command_loads_ends_in_one_line(monkeypatch, capsys, sigterm_default, signum):
    """The half-second in which Python loads a command (Hydra, OmegaConf), before its own handling."""
    from mnist99 import commands

    loading = commands.importlib.import_module
    monkeypatch.setattr(commands.importlib, "import_module", lambda name: stop(signum) if name.startswith("mnist99.cli") else loading(name))
    with pytest.raises(SystemExit) as ended:
        commands.train()  # puts in mnist99's SIGTERM handler, which the fixture replaces with pytest's again
    assert ended.value.code == 128 + signum
    assert f"{stopped_by(signum)} before the command began: nothing was written." in one_paragraph(capsys.readouterr().err)


def test_every_command_loads_through_the_module_that_handles_a_stop_and_imports_only_the_standard_library():
    """train.py, eval.py, predict.py and the installed mnist99-* entry points all start in mnist99.commands."""
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"mnist99-train": "mnist99.commands:train", "mnist99-eval": "mnist99.commands:evaluate",
                       "mnist99-predict": "mnist99.commands:predict"}
    for command in ("train", "eval", "predict"):
        assert f'start("{command}")' in (ROOT / f"{command}.py").read_text()
    loaded = subprocess.run([sys.executable, "-c", "import json, sys, mnist99.commands; print(json.dumps(list(sys.modules)))"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert not {"hydra", "omegaconf", "torch", "lightning", "yaml"} & {m.split(".")[0] for m in json.loads(loaded)}
