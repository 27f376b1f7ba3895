"""Shell completion as the help installs it, `eval "$(python train.py -sc install=bash)"`, in a real
bash: Hydra's completion function, asked as bash asks it at a Tab, offers each command its own keys."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

BIN = Path(sys.executable).parent  # `python` and the mnist99-* entry points of this environment
# (line typed so far) for each Tab pressed below; the function reads COMP_LINE, bash's words and COMP_CWORD
LINES = ["python train.py model=", "python train.py trainer.max_", "python eval.py ", "python eval.py mo", "python eval.py to",
         "python predict.py ", "python predict.py ckpt_path=tests/confte"]
ENTRY_LINES = ["mnist99-train mo", "mnist99-eval "]
TAB = """
tab() {
  COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}; COMP_WORDS=($COMP_LINE)
  COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); [[ "$COMP_LINE" == *" " ]] && COMP_CWORD=${#COMP_WORDS[@]}
  COMPREPLY=(); hydra_bash_completion
  printf '%s\\t%s\\n' "$1" "${COMPREPLY[*]}"
}
"""


def own_keys(command: str) -> list[str]:
    """`key=` of each key of conf/<command>.yaml (eval's and predict's, read from the file as a user would)."""
    return [f"{k}=" for k in yaml.safe_load((ROOT / "conf" / f"{command}.yaml").read_text()) if k not in ("defaults", "hydra")]


def offered(install: list[str], lines: list[str]) -> dict[str, list[str]]:
    """{line: the words the completion offers at its end}, from one bash that installed the completion
    with each command of `install`, as a user does, then checks what `complete -p` says of it."""
    script = "".join(f'eval "$({command} -sc install=bash)" || exit 1\n' for command in install) + TAB
    script += "".join(f"tab '{line}'\n" for line in lines)
    script += "".join(f"complete -p {command.split()[0]}\n" for command in install)
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(ROOT), "LANG": "C.UTF-8"}
    proc = subprocess.run([shutil.which("bash") or "bash", "--norc", "--noprofile", "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-3000:]
    out = proc.stdout.splitlines()
    for command in install:  # the completion is bound to the command the user types first
        bound = f" -F hydra_bash_completion {command.split()[0]}"
        assert any(row.startswith("complete ") and row.endswith(bound) for row in out), out
    return {line: words.split() for line, words in (row.split("\t") for row in out if "\t" in row)}


@pytest.fixture(scope="module")
def scripts() -> dict[str, list[str]]:
    return offered(["python train.py", "python eval.py", "python predict.py"], LINES)


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash on this machine")
def test_train_completes_its_groups_options_and_keys(scripts):
    assert {"model=cnn", "model=lenet", "model=resnet18"} <= set(scripts["python train.py model="])
    assert scripts["python train.py trainer.max_"] == ["trainer.max_epochs=", "trainer.max_steps=", "trainer.max_time="]


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash on this machine")
def test_eval_and_predict_complete_their_own_keys_not_trains(scripts):
    assert scripts["python eval.py "] == sorted([*own_keys("eval"), "hydra", "hydra."])
    assert {"ckpt_path=", "top_losses="} <= set(scripts["python eval.py "])
    assert scripts["python eval.py mo"] == []  # conf/ holds train's groups: none is eval's
    assert scripts["python eval.py to"] == ["top_losses="]
    assert scripts["python predict.py "] == sorted([*own_keys("predict"), "hydra", "hydra."])
    assert {"batch_size=", "ckpt_path=", "csv=", "inputs="} <= set(scripts["python predict.py "])
    assert scripts["python predict.py ckpt_path=tests/confte"] == ["ckpt_path=tests/conftest.py"]  # a path key: its files


@pytest.mark.skipif(shutil.which("bash") is None or not (BIN / "mnist99-train").is_file(),
                    reason="no bash, or mnist99 is not installed in this environment (pip install -e .)")
def test_the_installed_commands_complete_too():
    entry = offered(["mnist99-train", "mnist99-eval"], ENTRY_LINES)
    assert entry["mnist99-train mo"] == ["model.", "model="]
    assert entry["mnist99-eval "] == sorted([*own_keys("eval"), "hydra", "hydra."])
