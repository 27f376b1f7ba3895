"""`python eval.py ckpt_path=<run dir>`: the run's own test accuracy again, and what it got wrong."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from conftest import one_paragraph, run_in_process


@pytest.fixture(scope="module")
def run_dir(trained_run, tmp_path_factory):
    """A copy of the shared run, in a runs/ folder of its own: eval.py writes beside it, into evals/."""
    return Path(shutil.copytree(trained_run, tmp_path_factory.mktemp("eval") / "runs" / trained_run.name))


def evaluate(*args):
    return run_in_process("eval", *args)


def written(proc) -> Path:
    """The folder eval.py says it wrote into (its last line)."""
    line = proc.stdout.strip().splitlines()[-1]
    assert line.startswith("wrote eval.yaml, confusion_matrix.png, top_losses.png into "), proc.stdout
    return Path(line.rsplit(" into ", 1)[1])


def test_eval_matches_the_runs_test_accuracy_and_writes_its_figures_into_a_folder_of_its_own(run_dir):
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    proc = evaluate(f"ckpt_path={run_dir}", "top_losses=6")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = written(proc)  # outputs/evals/<time>_<run folder name>, beside the runs/ folder that holds the run
    assert out.parent == run_dir.parent.parent / "evals" and re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_" + re.escape(run_dir.name), out.name)
    assert {p.name for p in out.iterdir()} == {"eval.yaml", "confusion_matrix.png", "top_losses.png"}
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before  # the run's folder as the run left it
    trained = yaml.safe_load((run_dir / "run.yaml").read_text())["metrics"]["test/acc"]
    result = yaml.safe_load((out / "eval.yaml").read_text())
    assert result["test/acc"] == pytest.approx(trained, abs=0.001) and result["test_images"] == 120 and "note" not in result
    assert Path(result["checkpoint"]).name == Path(yaml.safe_load((run_dir / "run.yaml").read_text())["tested_weights"]).name
    assert Path(result["checkpoint"]).parent == run_dir / "checkpoints"  # the copy's own checkpoint, not the original's
    confusion = result["confusion_matrix"]
    assert len(confusion) == 10 and sum(map(sum, confusion)) == 120  # every test image once
    assert sum(confusion[i][i] for i in range(10)) / 120 == pytest.approx(result["test/acc"], abs=1e-6)
    losses = [r["loss"] for r in result["top_losses"]]
    assert len(losses) == 6 and losses == sorted(losses, reverse=True)
    for name in ("confusion_matrix.png", "top_losses.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert f"test/acc={result['test/acc']:.4f}" in proc.stdout and "note:" not in proc.stdout
    again = evaluate(f"ckpt_path={run_dir}", "top_losses=0")  # the same second: a folder of its own too
    assert again.returncode == 0 and written(again) != out and (out / "eval.yaml").read_text() == yaml.safe_dump(result, sort_keys=False)


def test_eval_writes_where_output_dir_says_and_never_into_the_run(run_dir, tmp_path):
    proc = evaluate(f"ckpt_path={run_dir}", f"output_dir={tmp_path / 'mine'}", "top_losses=0")
    assert proc.returncode == 0 and written(proc) == tmp_path / "mine", proc.stderr[-3000:]
    assert (tmp_path / "mine" / "eval.yaml").is_file()
    inside = evaluate(f"ckpt_path={run_dir}", f"output_dir={run_dir / 'eval'}")
    assert inside.returncode == 2 and "inside the run's own folder" in one_paragraph(inside.stderr)
    assert not (run_dir / "eval").exists()


def test_eval_says_when_the_runs_own_test_used_another_test_set(run_dir, tiny_tree, tmp_path):
    """The run's record (run.yaml's test_set) says what its test used: a test cut short, or a test folder that
    held other images, is said in one line and in eval.yaml."""
    record = yaml.safe_load((run_dir / "run.yaml").read_text())
    assert record["test_set"] == {"folder": str((tiny_tree / "testing").resolve()), "images": 120, "tested": 120}
    for i, (test_set, said) in enumerate((
            ({"tested": 32}, "this run's own test used 32 of its 120 test images; this evaluation uses the whole test set: 120 images"),
            ({"images": 100, "tested": 100}, "which holds 120 now: the test set has changed since"),
            ({"folder": "/elsewhere/testing"}, "this run's own test used the 120 images of /elsewhere/testing"))):
        changed = Path(shutil.copytree(run_dir, tmp_path / f"run{i}"))
        (changed / "run.yaml").write_text(yaml.safe_dump(record | {"test_set": record["test_set"] | test_set}, sort_keys=False))
        proc = evaluate(f"ckpt_path={changed}", f"output_dir={tmp_path / f'eval{i}'}", "top_losses=0")
        assert proc.returncode == 0, proc.stderr[-3000:]
        notes = [line for line in proc.stdout.splitlines() if line.startswith("note: ")]
        assert len(notes) == 1 and said in notes[0], proc.stdout
        assert yaml.safe_load((tmp_path / f"eval{i}" / "eval.yaml").read_text())["note"] == notes[0][len("note: "):]


def test_eval_of_a_run_tested_on_a_few_batches_says_so(tiny_tree, tmp_path):
    """A real run tested under trainer.limit_test_batches=1; the note names the setting, from the run's record and,
    for its checkpoint copied alone (no record), from the config the checkpoint holds."""
    proc = run_in_process("train", f"data.data_dir={tiny_tree}", "data.val_size=60", "data.batch_size=32", "model=mlp",
                          "trainer.max_epochs=1", "trainer.limit_test_batches=1", "logger=none", "trainer.enable_progress_bar=false",
                          f"paths.log_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "runs").iterdir()
    assert yaml.safe_load((run / "run.yaml").read_text())["test_set"]["tested"] == 32
    proc = evaluate(f"ckpt_path={run}", "top_losses=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ("note: this run's own test used 32 of its 120 test images (trainer.limit_test_batches=1); this evaluation uses "
            "the whole test set: 120 images") in proc.stdout.splitlines()
    lone = tmp_path / "alone" / "model.ckpt"
    lone.parent.mkdir()
    shutil.copy(run / "checkpoints" / "last.ckpt", lone)
    proc = evaluate(f"ckpt_path={lone}", f"output_dir={tmp_path / 'lone-eval'}", "top_losses=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ("note: this run's own test used 1 of 4 batches (trainer.limit_test_batches=1); this evaluation uses the whole "
            "test set: 120 images") in proc.stdout.splitlines()


def test_the_default_folder_of_an_evaluation():
    from mnist99.locate import eval_folder

    runs = Path("/somewhere/outputs/runs/2026-11-28_14-36-14_cnn")
    folder = eval_folder(runs, runs / "checkpoints" / "last.ckpt", Path("/checkout/outputs"))
    assert folder.parent == Path("/somewhere/outputs/evals") and folder.name.endswith("_2026-11-28_14-36-14_cnn")
    job = Path("/somewhere/outputs/multirun/2026-11-28_14-39-06/0_model=linear")
    assert eval_folder(job, job / "checkpoints" / "last.ckpt", Path("/checkout/outputs")).parent == Path("/somewhere/outputs/evals")
    lone = Path("/anywhere/model.ckpt")
    folder = eval_folder(lone.parent, lone, Path("/checkout/outputs"))
    assert folder.parent == Path("/checkout/outputs/evals") and folder.name.endswith("_model")


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
    assert composed.returncode == 0
    assert yaml.safe_load(composed.stdout) == {"ckpt_path": str(run_dir), "top_losses": 3, "output_dir": None}
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
    proc = run_in_process("eval", f"ckpt_path={lone}", f"output_dir={tmp_path / 'results'}", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = yaml.safe_load((run_dir / "run.yaml").read_text())["metrics"]["test/acc"]
    result = yaml.safe_load((tmp_path / "results" / "eval.yaml").read_text())
    assert result["test/acc"] == pytest.approx(trained, abs=0.001) and result["checkpoint"] == str(lone)
    assert {p.name for p in lone.parent.iterdir()} == {"model.ckpt"}  # nothing written beside it
    assert not any(elsewhere.iterdir())


def test_an_older_checkpoint_works_in_its_run_folder_and_alone_says_what_is_missing(run_dir, tmp_path):
    old_run = tmp_path / "run"
    shutil.copytree(run_dir, old_run, ignore=shutil.ignore_patterns("events.*", "*.png"))
    old = old_run / "checkpoints" / "last.ckpt"
    state = torch.load(old, weights_only=True)
    del state["mnist99"]  # as written before checkpoints carried their config
    torch.save(state, old)
    proc = run_in_process("eval", f"ckpt_path={old}", "top_losses=0", f"output_dir={tmp_path / 'eval'}")
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
