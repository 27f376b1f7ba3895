"""`python eval.py ckpt_path=<run dir>`: the run's own test accuracy again, and what it got wrong."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from conftest import run_in_process


@pytest.fixture(scope="module")
def run_dir(trained_run, tmp_path_factory):
    """A copy of the shared run: eval.py writes its figures and eval.yaml into the run folder."""
    return Path(shutil.copytree(trained_run, tmp_path_factory.mktemp("eval") / trained_run.name))


def evaluate(*args):
    return run_in_process("eval", *args)


def test_eval_matches_the_runs_test_accuracy_and_writes_its_figures(run_dir):
    for name in ("confusion_matrix.png", "top_losses.png"):  # the training run wrote them too
        (run_dir / name).unlink()
    proc = evaluate(f"ckpt_path={run_dir}", "top_losses=6")
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = yaml.safe_load((run_dir / "run.yaml").read_text())["metrics"]["test/acc"]
    result = yaml.safe_load((run_dir / "eval.yaml").read_text())
    assert result["test/acc"] == pytest.approx(trained, abs=0.001)
    assert result["checkpoint"] == yaml.safe_load((run_dir / "run.yaml").read_text())["tested_weights"]
    confusion = result["confusion_matrix"]
    assert len(confusion) == 10 and sum(map(sum, confusion)) == 120  # every test image once
    assert sum(confusion[i][i] for i in range(10)) / 120 == pytest.approx(result["test/acc"], abs=1e-6)
    losses = [r["loss"] for r in result["top_losses"]]
    assert len(losses) == 6 and losses == sorted(losses, reverse=True)
    for name in ("confusion_matrix.png", "top_losses.png"):
        assert (run_dir / name).read_bytes()[:4] == b"\x89PNG"
    assert f"test/acc={result['test/acc']:.4f}" in proc.stdout


def test_eval_refuses_what_is_not_a_run(tmp_path, run_dir):
    proc = run_in_process("eval", f"ckpt_path={tmp_path}")
    assert proc.returncode != 0 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    broken = tmp_path / "checkpoints" / "broken.ckpt"
    broken.parent.mkdir()
    broken.write_bytes((run_dir / "checkpoints" / "last.ckpt").read_bytes()[:1000])  # truncated
    (tmp_path / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    proc = run_in_process("eval", f"ckpt_path={broken}")
    assert proc.returncode != 0 and "Cannot read the checkpoint" in proc.stderr and "Traceback" not in proc.stderr
    missing = run_in_process("eval")
    assert missing.returncode == 2 and "ckpt_path is missing" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.parametrize("bad", ["top_losses=-1", "top_losses=many"])
def test_eval_names_an_impossible_top_losses(run_dir, bad):
    proc = run_in_process("eval", f"ckpt_path={run_dir}", bad)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("mnist99: error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr  # one paragraph
    assert errors[0].startswith("mnist99: error: top_losses=") and "whole number" in errors[0]


def test_eval_is_a_hydra_app_with_help_cfg_and_checked_keys(run_dir):
    helped = run_in_process("eval", "--help")
    assert helped.returncode == 0 and "ckpt_path" in helped.stdout and "top_losses: 9" in helped.stdout
    composed = run_in_process("eval", "--cfg", "job", f"ckpt_path={run_dir}", "top_losses=3")
    assert composed.returncode == 0 and yaml.safe_load(composed.stdout) == {"ckpt_path": str(run_dir), "top_losses": 3}
    typo = run_in_process("eval", f"ckpt_path={run_dir}", "top_loses=3")
    assert typo.returncode == 2 and "Unknown config key 'top_loses'" in typo.stderr and "top_losses" in typo.stderr


def test_training_logs_the_error_figures_to_tensorboard(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"images": 0})  # reads every event file there
    acc.Reload()
    assert {"test/confusion_matrix", "test/top_losses"} <= set(acc.Tags()["images"])
    (image,) = acc.Images("test/confusion_matrix")
    assert image.encoded_image_string[:4] == b"\x89PNG" and image.width > 100


def weights_tested(run_dir):
    return Path(yaml.safe_load((run_dir / "run.yaml").read_text())["tested_weights"])


def test_every_checkpoint_carries_the_runs_config_and_data_in_plain_values(run_dir):
    for ckpt in (run_dir / "checkpoints").glob("*.ckpt"):
        entry = torch.load(ckpt, map_location="cpu", weights_only=True)["mnist99"]  # plain values only
        assert entry["format"] == 1 and entry["classes"] == [str(i) for i in range(10)]
        assert (entry["image_size"], entry["channels"], entry["mean"], entry["std"]) == (28, 1, 0.1307, 0.3081)
        config = entry["config"]
        assert config["model"]["num_classes"] == 10 and "num_classes" not in config["model"]["net"]  # filled in by the build, given once
        assert "hydra" not in config and Path(config["data"]["data_dir"]).is_absolute()
        assert config == {k: v for k, v in yaml.safe_load((run_dir / "config.yaml").read_text()).items() if k != "choices"}


def test_a_relative_data_path_is_stored_absolute(make_cfg, tmp_path):
    from mnist99.checkpoints import describe

    cfg = make_cfg(data_dir="some/images")
    entry = describe(cfg, None)
    assert entry["config"]["data"]["data_dir"] == str(Path.cwd() / "some/images")
    assert cfg.data.data_dir == "some/images"  # the run's own config is left as it is


def test_a_checkpoint_copied_alone_is_evaluated_from_any_folder(run_dir, tmp_path):
    lone = tmp_path / "alone" / "model.ckpt"
    lone.parent.mkdir()
    shutil.copy(weights_tested(run_dir), lone)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run_in_process("eval", f"ckpt_path={lone}", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = yaml.safe_load((run_dir / "run.yaml").read_text())["metrics"]["test/acc"]
    result = yaml.safe_load((lone.parent / "eval.yaml").read_text())  # its results go beside it
    assert result["test/acc"] == pytest.approx(trained, abs=0.001) and result["checkpoint"] == str(lone)
    assert {p.name for p in lone.parent.iterdir()} == {"model.ckpt", "eval.yaml", "confusion_matrix.png", "top_losses.png"}
    assert not any(elsewhere.iterdir())


def test_an_older_checkpoint_works_in_its_run_folder_and_alone_says_what_is_missing(run_dir, tmp_path):
    old_run = tmp_path / "run"
    shutil.copytree(run_dir, old_run, ignore=shutil.ignore_patterns("events.*", "*.png"))
    old = old_run / "checkpoints" / "last.ckpt"
    state = torch.load(old, weights_only=True)
    del state["mnist99"]  # as written before checkpoints carried their config
    torch.save(state, old)
    proc = run_in_process("eval", f"ckpt_path={old}", "top_losses=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lone = tmp_path / "last.ckpt"
    shutil.copy(old, lone)
    proc = run_in_process("eval", f"ckpt_path={lone}")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("mnist99: error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr
    assert "holds no config of its own" in errors[0] and "ckpt_path=<run dir>" in errors[0]
    state["mnist99"] = {"format": 99}
    torch.save(state, lone)
    proc = run_in_process("eval", f"ckpt_path={lone}")
    assert proc.returncode == 2 and "newer mnist99" in proc.stderr and "Traceback" not in proc.stderr
