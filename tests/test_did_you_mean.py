"""A key without its section, a flag where an override belongs, a key eval or predict would ignore, a
number in quotes: each refused at start-up in one paragraph that names the override meant."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, one_paragraph, run_in_process


def refused(command: str, *args: str) -> str:
    """The one paragraph of a command refused at start-up (status 2), without its `mnist99: error: `."""
    proc = run_in_process(command, *args)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    return one_paragraph(proc.stderr).removeprefix("mnist99: error: ")


@pytest.mark.parametrize("args, meant", [
    (["max_epochs=3"], "Did you mean trainer.max_epochs=3?"),  # not +max_epochs=3, which would add a key nothing reads
    (["lr=0.1"], "Did you mean optimizer.lr=0.1 or callbacks.stop_on_divergence.lr=0.1?"),  # every key of that name
    (["batch_size=64"], "Did you mean data.batch_size=64?"),
    (["epochs=3"], "Did you mean trainer.max_epochs=3?"),  # a close name, and not optimizer.eps
    (["trainer.lr=0.1"], "Did you mean optimizer.lr=0.1 or "),  # a key of another section
    (["--epochs", "3"], ("--epochs 3: train.py has no option --epochs; settings are key=value overrides, without dashes. "
                         "Did you mean trainer.max_epochs=3?")),
    (["--lr=0.1"], ("--lr=0.1: train.py has no option --lr; settings are key=value overrides, without dashes. "
                    "Did you mean optimizer.lr=0.1 or ")),
    (["--max_epochs=3"], "Did you mean trainer.max_epochs=3?"),
    (["--max-epochs", "3", "model=mlp"], "Did you mean trainer.max_epochs=3?"),
    (["--model", "cnn"], "Did you mean model=cnn?"),
    (["--test"], "Did you mean test=true?"),  # a switch without a value: turned on
])
def test_a_key_without_its_section_or_written_as_a_flag_names_the_full_override(args, meant):
    assert meant in refused("train", *args)


def test_a_misspelt_key_keeps_its_value_as_typed_and_names_a_group_only_with_one_of_its_options():
    said = refused("train", "train=false")
    # false: no trainer option, and a switch is meant (not data.train_dir, the closest name, a folder)
    assert "Did you mean" not in said and "trainer=" not in said.split("The keys")[0] and "train_dir" not in said, said
    assert "Did you mean trainer.deterministic=true?" in refused("train", "determinstic=true")  # a switch close by name
    assert "Did you mean model=cnn,mlp?" in refused("train", "-m", "modle=cnn,mlp")
    assert "Did you mean experiment=fast?" in refused("train", "experimnt=fast")  # a group no key of the config holds


@pytest.mark.parametrize("typed, value, key", [("'1e-3'", "1e-3", "optimizer.lr"), ('"0.01"', "0.01", "optimizer.lr"),
                                               ("'3'", "3", "trainer.max_epochs")])
def test_a_number_in_quotes_is_named_as_the_string_it_became(typed, value, key):
    said = refused("train", f"{key}={typed}")
    assert said.endswith(f"The quotes made '{value}' a string, not a number: drop them, {key}={value}."), said


def test_a_number_in_quotes_is_named_in_a_sweeps_job_too(tiny_tree, tmp_path):
    """A sweep checks each job's values in the job: its one paragraph names the quotes as a single run's does."""
    proc = run_in_process("train", "-m", "optimizer.lr='1e-3',0.01", "trainer.max_epochs=1", f"data.data_dir={tiny_tree}",
                          f"paths.log_dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 3 and "The quotes made '1e-3' a string, not a number: drop them, optimizer.lr=1e-3." in proc.stderr


def test_an_unquoted_number_in_any_notation_is_one():
    proc = run_in_process("train", "--cfg", "job", "optimizer.lr=1e-3", "trainer.max_epochs=3")
    assert proc.returncode == 0 and "lr: 0.001" in proc.stdout and "max_epochs: 3" in proc.stdout, proc.stderr[-2000:]
    said = refused("train", "optimizer.lr='abc'")  # a string that is no number: the schema's words alone
    assert "quotes" not in said and "optimizer.lr='abc' is impossible" in said


def keys_of(command: str) -> list[str]:
    """The keys of conf/<command>.yaml, in the file's order."""
    return [k for k in yaml.safe_load((ROOT / "conf" / f"{command}.yaml").read_text()) if k not in ("defaults", "hydra")]


@pytest.mark.parametrize("command, args, key", [
    ("eval", ["ckpt_path=x", "+data.data_dir=y"], "data.data_dir"),
    ("eval", ["ckpt_path=x", "data.data_dir=y"], "data.data_dir"),
    ("eval", ["ckpt_path=x", "model=cnn"], "model"),  # conf/ holds train's groups: none is eval's
    ("predict", ["ckpt_path=x", "inputs=a.png", "++data.data_dir=y"], "data.data_dir"),
])
def test_eval_and_predict_refuse_a_key_they_would_ignore_and_list_theirs(command, args, key):
    said = refused(command, *args)
    assert f"Unknown config key '{key}'" in said and f"{command}.py reads only its own keys" in said
    assert f"The keys it takes are: {', '.join(keys_of(command))} " in said
    documented = {"eval": {"ckpt_path", "top_losses"}, "predict": {"ckpt_path", "inputs", "csv", "batch_size"}}
    assert documented[command] <= set(keys_of(command))


def test_eval_and_predict_name_their_own_key_meant():
    assert "Did you mean batch_size=8?" in refused("predict", "ckpt_path=x", "inputs=a.png", "+data.batch_size=8")
    assert "Did you mean top_losses=3?" in refused("eval", "ckpt_path=x", "top_loses=3")
    assert "eval.py has no option --ckpt_path; settings are key=value overrides, without dashes. Did you mean ckpt_path=x?" in \
        refused("eval", "--ckpt_path", "x")
    assert "Did you mean inputs=a.png,b.png?" in refused("predict", "--inputs", "a.png,b.png", "ckpt_path=x")


def test_good_commands_and_hydras_own_flags_still_pass():
    for command, args in (("train", ["--cfg", "job", "trainer.max_epochs=3"]), ("train", ["--cfg=job", "--resolve", "seed=1"]),
                          ("train", ["--cfg", "job", "--package", "trainer", "trainer.max_epochs=4"]),
                          ("eval", ["--cfg", "job", "ckpt_path=x", "top_losses=3", "hydra.job.chdir=false"]),
                          ("predict", ["--cfg", "job", "ckpt_path=x", "inputs=a.png,b.png", "batch_size=8", "csv=out.csv"])):
        proc = run_in_process(command, *args)
        assert proc.returncode == 0 and "mnist99: error" not in proc.stderr, (command, args, proc.stderr[-2000:])
    assert "--multirun and --cfg cannot be given together" in refused("train", "-m", "--cfg", "job")  # Hydra's traceback, else


def test_the_answers_come_without_importing_torch_or_lightning():
    """Named before the training stack loads, in a new interpreter as a user meets them."""
    probe = ("import runpy, sys\nsys.argv = sys.argv[1:]\ntry:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
             "except SystemExit as e:\n    print('EXIT', e.code, 'torch' in sys.modules or 'lightning' in sys.modules)")
    for args in (["train.py", "max_epochs=3"], ["train.py", "--epochs", "3"], ["eval.py", "ckpt_path=x", "+data.data_dir=y"]):
        proc = subprocess.run([sys.executable, "-c", probe, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.stdout.strip().splitlines()[-1] == "EXIT 2 False", (args, proc.stdout[-1000:], proc.stderr[-2000:])
