"""What a new user meets before any training: --help, refusals of misspelt options and keys and of
impossible values, each in one paragraph, fast (no torch or Lightning imported), and no run folder."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT, one_paragraph, run_in_process

# A new interpreter that runs a command's script (train.py, eval.py, predict.py) with ARGV and then
# says whether the training stack was imported on the way: the checks must answer without it.
PROBE = """
import runpy, sys
script, code = sys.argv[1], 0
sys.argv = [script, *sys.argv[2:]]
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit as e:
    code = e.code
print("EXIT", code, "torch" in sys.modules, "lightning" in sys.modules, file=sys.stderr)
"""


def probe(*args: str, tmp_path=None, script: str = "train.py") -> tuple[int, str, str, bool]:
    """(exit status, stdout, stderr without the probe's line, whether torch/lightning were imported).
    With tmp_path, a train.py run would write there."""
    logs = [f"paths.log_dir={tmp_path}"] if tmp_path else []
    proc = subprocess.run([sys.executable, "-c", PROBE, script, *args, *logs], cwd=ROOT, capture_output=True, text=True, timeout=120)
    *rest, last = proc.stderr.rstrip().splitlines()
    _, code, torch_loaded, lightning_loaded = last.split()
    return int(code), proc.stdout, "\n".join(rest), torch_loaded == "True" or lightning_loaded == "True"


MISSPELT = [
    ("experiment=fats", "Did you mean experiment=fast?"),
    ("debug=fdrr", "Did you mean debug=fdr?"),
    ("model=resnet81", "Did you mean model=resnet18"),
    ("hparams_search=optina", "Did you mean hparams_search=optuna?"),
    ("modle=cnn", "Did you mean model=cnn?"),
    ("model.net.widht=[8,16]", "Did you mean model.net.widths?"),
    ("model.net.hidden_sizes=5", "Did you mean model.net.hidden_size or model.net.image_size? The keys under model.net are: "
                                 "_partial_, _target_, hidden_size, image_size, widths."),
    ("optimizer.lrr=0.1", "Did you mean optimizer.lr? The keys under optimizer are: _partial_, _target_, betas, decay_norm_and_bias, "
                          "eps, lr, weight_decay"),
    ("model=resnet999", "there is no option 'resnet999' in the config group 'model'"),
    ("optimizer.lr=-1", "optimizer.lr=-1 is impossible"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0 is impossible"),
    ("data.batch_size=0", "data.batch_size=0 is impossible"),
    ("data.batch_size=abc", "data.batch_size='abc' is impossible"),
    ("trainer.gpus=1", "trainer.accelerator=cpu"),  # on a machine without a GPU
    ("data=folder", "data=folder trains on your own image folder, and none was given"),
]


@pytest.mark.parametrize("override,expected", MISSPELT, ids=[m[0] for m in MISSPELT])
def test_a_misspelt_or_impossible_override_is_refused_in_one_paragraph_and_leaves_nothing(override, expected, tmp_path):
    import torch

    if override == "trainer.gpus=1" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = run_in_process("train", override, f"paths.log_dir={tmp_path}")
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    message = proc.stderr.strip()
    assert message.startswith("mnist99: error: ") and expected in message, message
    assert "\n" not in message and "Config search path" not in message and "HYDRA_FULL_ERROR" not in message
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # no run folder, nothing to pick up later


def test_an_unknown_option_lists_the_group_and_a_key_far_from_any_suggests_plus():
    proc = run_in_process("train", "experiment=zzz")
    assert "The options are: accurate, best, blog_linear" in proc.stderr and "Did you mean" not in proc.stderr
    proc = run_in_process("train", "optimizer.qqqqq=1")
    assert "add a new key on purpose with +optimizer.qqqqq=1" in proc.stderr


def test_a_misspelt_option_inside_a_sweep_is_refused_before_any_job(tmp_path):
    proc = run_in_process("train", "-m", "model=linear,resnet81", f"paths.log_dir={tmp_path}")
    assert proc.returncode == 2 and "Did you mean model=resnet18" in proc.stderr
    assert not (tmp_path / "multirun").exists()


def test_checks_answer_without_importing_torch_or_lightning(tmp_path):
    code, _, err, loaded = probe("experiment=fats", tmp_path=tmp_path)
    assert code == 2 and "Did you mean experiment=fast?" in err and not loaded
    for preset in ([], ["experiment=fast"], ["experiment=accurate"]):  # with every recipe's config
        code, _, err, loaded = probe(*preset, "optimizer.lr=-1", tmp_path=tmp_path)
        assert code == 2 and "optimizer.lr=-1 is impossible" in err and not loaded, preset
    code, out, _, loaded = probe("--cfg", "job", "model=mlp", tmp_path=tmp_path)
    assert code == 0 and "mnist99.models.nets.MLP" in out and not loaded


@pytest.mark.parametrize("script, args, expected", [
    ("eval.py", [], "ckpt_path is missing"),
    ("eval.py", ["ckpt_path=no/such/run"], "no/such/run does not exist"),
    ("predict.py", [], "ckpt_path and inputs are missing"),
    ("predict.py", ["ckpt_path=no/such/run", "inputs=digits/"], "no/such/run does not exist"),
    ("predict.py", ["ckpt_path=no/such/run"], "inputs is missing"),
])
def test_eval_and_predict_answer_a_missing_or_wrong_path_without_importing_torch(script, args, expected):
    code, _, err, loaded = probe(*args, script=script)
    assert code == 2 and expected in err and "Traceback" not in err and not loaded


@pytest.mark.parametrize("given, expected", [("no/such/digit.png", "no/such/digit.png does not exist"),
                                             ("/dev/null", "/dev/null is not a file or a folder")])  # read forever, were it a pipe
def test_predict_names_an_input_it_cannot_read_before_it_loads_the_run(trained_run, given, expected):
    code, _, err, loaded = probe(f"ckpt_path={trained_run}", f"inputs={given}", script="predict.py")
    assert code == 2 and f"inputs: {expected}" in err and not loaded


def test_help_shows_usage_examples_and_every_group(tmp_path):
    code, out, _, loaded = probe("--help", tmp_path=tmp_path)
    assert code == 0 and not loaded
    assert "usage: python train.py [group=option ...] [key=value ...]" in out
    for example in ("python train.py experiment=fast", "python train.py model=resnet18 trainer.gpus=1", "python train.py -m ",
                    "resume=outputs/runs/<run>", "data=folder data.data_dir=", "--cfg job", "--hydra-help"):
        assert example in out, example
    assert "experiment: accurate, best," in out and "model: cnn, lenet, linear," in out
    assert "mnist99.data.datamodule" not in out  # not the 188-line config dump


def test_data_refused_after_start_leaves_no_run_folder(tmp_path):
    proc = run_in_process("train", "data=folder", f"data.data_dir={tmp_path / 'nowhere'}", f"paths.log_dir={tmp_path / 'logs'}")
    assert proc.returncode == 2 and "holds nothing (it does not exist)" in proc.stderr
    assert not (tmp_path / "logs" / "runs").exists() or not any((tmp_path / "logs" / "runs").iterdir())


@pytest.mark.parametrize("folder, data, expected", [
    ("nowhere", "data=folder", "holds nothing (it does not exist), but no training and test split"),
    ("notes", "data=folder", "holds notes.txt, but no training and test split"),
    ("notes", "data=mnist", "never writes into one that holds anything else"),
    ("no_classes", "data=folder", "train holds no class folders"),
])
def test_a_data_folder_the_run_cannot_use_is_refused_without_importing_torch(tmp_path, folder, data, expected):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("not images")
    for split in ("train", "test"):
        (tmp_path / "no_classes" / split).mkdir(parents=True)
    code, _, err, loaded = probe(data, f"data.data_dir={tmp_path / folder}", tmp_path=tmp_path / "logs")
    assert code == 2 and expected in err and "Traceback" not in err and not loaded
    assert not list((tmp_path / "logs").glob("runs/*")) and sorted(p.name for p in (tmp_path / "notes").iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("script", ["train.py", "eval.py", "predict.py"])
def test_version_names_mnist99_and_its_stack_and_shell_completion_says_what_it_needs(script):
    code, out, err, loaded = probe("--version", script=script)
    assert code == 0 and out.startswith("mnist99 0.") and "lightning 2." in out and "hydra-core 1.4" in out and not loaded
    code, _, err, loaded = probe("--shell-completion", script=script)
    assert code == 2 and f'eval "$(python {script} -sc install=bash)"' in err and "Traceback" not in err and not loaded


def test_the_quick_help_is_hydras_own_help():
    """--help is printed without Hydra's (slow) group listing, from the same template: both agree."""
    quick = run_in_process("train", "--help")
    hydras = subprocess.run([sys.executable, "-c", "import sys; sys.argv = ['train.py', '--help']\n"
                             "from mnist99.cli.train import hydra_main; hydra_main()"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert quick.returncode == hydras.returncode == 0
    lines = lambda text: [line for line in text.splitlines() if line.strip()]  # noqa: E731 - Hydra adds a blank line
    assert lines(quick.stdout) == lines(hydras.stdout) and "usage: python train.py" in quick.stdout


def test_a_missing_extra_is_refused_before_torch_loads(tmp_path):
    """Without mlflow installed (hidden here), logger=mlflow is refused in one paragraph naming the extra."""
    probe = ("import runpy, sys\nsys.modules['mlflow'] = None\nsys.argv = ['train.py', *sys.argv[1:]]\ncode = 0\n"
             "try:\n    runpy.run_path('train.py', run_name='__main__')\nexcept SystemExit as e:\n    code = e.code\n"
             "print('EXIT', code, 'torch' in sys.modules, file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", probe, "logger=mlflow", f"paths.log_dir={tmp_path}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    *said, last = proc.stderr.rstrip().splitlines()
    assert last == "EXIT 2 False", proc.stderr[-3000:]
    assert 'pip install -e ".[mlflow]"' in one_paragraph("\n".join(said)) and not (tmp_path / "runs").exists()
