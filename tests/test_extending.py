"""Extending mnist99 as docs/architecture.md says: a net in its class and its YAML, a callback in its
module and its YAML, a logger in its YAML, each followed literally in a copy of the project and run
as a user runs it; and a model or datamodule of the user's own, with only the keys its class takes."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, one_paragraph, run_in_process

RUN_OUTPUTS = {ROOT / n for n in ("data", "outputs", "multirun", "lightning_logs", "build")}


def recipes() -> dict[str, tuple[dict[str, str], list[str]]]:
    """{recipe title: ({file path: its text}, [commands])} of docs/architecture.md's "Extending
    mnist99": each code block goes to the path the line before it names first."""
    section = (ROOT / "docs" / "architecture.md").read_text().split("## Extending mnist99", 1)[1]
    found = {}
    for part in section.split("\n### ")[1:]:
        title, body = part.split("\n", 1)
        files, commands = {}, []
        for block in re.finditer(r"([^\n]*)\n\n```(\w+)\n(.*?)```", body, re.S):
            before, language, code = block.groups()
            if language == "bash":
                commands += [line for line in code.splitlines() if line.startswith("python train.py")]
            else:
                files[re.findall(r"`([\w/.]+\.(?:py|yaml))`", before)[0]] = code
        found[title] = (files, commands)
    return found


RECIPES = recipes()


@pytest.fixture(scope="module")
def extended(tmp_path_factory, tiny_tree) -> dict[str, subprocess.CompletedProcess]:
    """A copy of the project with every recipe's files added (nothing else), and each recipe's
    command run there in a new interpreter on the tiny tree, one training batch each."""
    copy, logs = tmp_path_factory.mktemp("copy") / "mnist99", tmp_path_factory.mktemp("logs")
    shutil.copytree(ROOT, copy, ignore=lambda folder, names: [
        n for n in names if Path(folder, n) in RUN_OUTPUTS or n in (".git", "__pycache__", ".pytest_cache", ".hypothesis")
        or n.startswith(".venv") or n.endswith(".egg-info")])
    before = {p.relative_to(copy) for p in copy.rglob("*")}
    for files, _ in RECIPES.values():
        for path, text in files.items():
            assert not (copy / path).exists(), f"{path}: a recipe adds files, it does not change them"
            (copy / path).write_text(text)
    added = {p.relative_to(copy) for p in copy.rglob("*")} - before
    assert added == {Path(p) for files, _ in RECIPES.values() for p in files}
    runs = {}
    for title, (_, commands) in RECIPES.items():
        for command in commands:
            args = shlex.split(command)[2:]  # after `python train.py`
            runs[title] = subprocess.run(
                [sys.executable, str(copy / "train.py"), *args, f"data.data_dir={tiny_tree}", "data.val_size=60",
                 "trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
                 "trainer.limit_test_batches=1", "trainer.enable_progress_bar=false", f"paths.log_dir={logs}",
                 f"hydra.run.dir={logs / folder(title)}"],
                cwd=copy, capture_output=True, text=True, timeout=600)
    runs["copy"], runs["logs"] = copy, logs
    return runs


def folder(title: str) -> str:
    return re.sub(r"\W+", "_", title)


def record(run_dir: Path) -> dict:
    return yaml.safe_load((run_dir / "run.yaml").read_text())


def test_the_recipes_are_there():
    titles = {title.split(":")[0]: files for title, (files, commands) in RECIPES.items() if commands}
    assert set(titles) == {"A net", "A callback", "A logger"}
    assert [len(files) for files in titles.values()] == [2, 2, 1]  # two files, two files, one


def test_a_net_in_two_files_trains(extended):
    proc = extended["A net: its class and its YAML"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Model: SmallVGG" in proc.stdout and "model=small_vgg test/acc=" in proc.stdout
    ran = record(extended["logs"] / folder("A net: its class and its YAML"))
    assert ran["status"] == "completed" and ran["choices"]["model"] == "small_vgg"


def test_a_callback_in_two_files_runs_with_the_default_ones(extended):
    proc = extended["A callback: its module and its YAML"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    ran = record(extended["logs"] / folder("A callback: its module and its YAML"))
    assert ran["metrics"]["train/images_seen"] == 256.0  # one batch of train.yaml's 256
    assert (extended["logs"] / folder("A callback: its module and its YAML") / "checkpoints" / "last.ckpt").is_file()  # the default ones too


def test_a_logger_in_one_file_logs(extended):
    proc = extended["A logger: its YAML"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list((extended["logs"] / "tensorboard" / "lenet").glob("version_0/events.out.tfevents.*"))


@pytest.mark.slow
def test_the_copys_own_tests_test_the_new_net(extended):
    """The existing tests pick the new net up from conf/model/ and the rule allows it: nothing names it. Slow (a
    second pytest, 24 s): .ci/run runs it after the default run."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "tests/test_models.py", "tests/test_trusted.py",
                           "tests/test_schema.py", "tests/test_configs.py", "-k", "small_vgg or shipped_configs or every_option"],
                          cwd=extended["copy"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "PASSED tests/test_models.py::test_fast_dev_run[small_vgg]" in proc.stdout, proc.stdout[-3000:]


@pytest.fixture
def own_configs(tmp_path, monkeypatch) -> Path:
    """A config folder of the user's own, beside conf/ (hydra.searchpath), naming tests/own_parts.py."""
    monkeypatch.setenv("MNIST99_ALLOW_TARGETS", "own_parts.*")
    for path, text in {"model/tiny.yaml": "_target_: own_parts.TinyModel\nhidden: 16\nlr: 0.1\n",
                       "data/blocks.yaml": "_target_: own_parts.BlockDigits\nbatch_size: 32\n"}.items():
        (tmp_path / "own" / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "own" / path).write_text(text)
    return tmp_path / "own"


def test_a_model_of_ones_own_with_only_its_keys_trains(own_configs, tiny_tree, tmp_path):
    proc = run_in_process("train", f"hydra.searchpath=[file://{own_configs}]", "model=tiny", f"data.data_dir={tiny_tree}",
                          "data.val_size=60", "trainer.max_epochs=3", "data.batch_size=32", "trainer.enable_progress_bar=false",
                          f"paths.log_dir={tmp_path / 'logs'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "logs" / "runs").iterdir()
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["model"] == {"_target_": "own_parts.TinyModel", "hidden": 16, "lr": 0.1}
    assert record(run_dir)["metrics"]["test/acc"] > 0.3  # chance is 0.1


def test_a_datamodule_of_ones_own_trains_once_the_class_count_is_given(own_configs, tmp_path):
    args = (f"hydra.searchpath=[file://{own_configs}]", "data=blocks", "model=cnn", "trainer.max_epochs=3",
            "trainer.enable_progress_bar=false", f"paths.log_dir={tmp_path / 'logs'}")
    refused = run_in_process("train", *args)
    assert refused.returncode == 2 and "set model.num_classes=" in one_paragraph(refused.stderr)
    proc = run_in_process("train", *args, "model.num_classes=10")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "logs" / "runs").iterdir()
    assert record(run_dir)["metrics"]["test/acc"] > 0.3
