"""Tab completion (`eval "$(python train.py -sc install=bash)"`): what each command offers at a Tab, which
Hydra's installed shell function asks for with `-sc query=<shell>`."""

from __future__ import annotations

import os
import re
import sys
from typing import NoReturn

from mnist99.config import own_keys

# keys whose value is a file or folder: completed with the files there, as Hydra does only after ./ or /
PATH_KEYS = ("ckpt_path", "inputs", "csv", "resume")


def completion_query(shell: str, config_name: str, config_dir: str) -> NoReturn:
    """`-sc query=bash`, what the installed completion runs at each Tab (COMP_LINE is the line): Hydra's
    answer, less the config groups a command does not compose (eval.py and predict.py share conf/ with
    train's groups), plus the files and folders for a key that names one (ckpt_path=, inputs=, data.data_dir=).
    Nothing else may reach stdout: the shell offers every word printed. A query that fails offers nothing."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    said = io.StringIO()
    GlobalHydra.instance().clear()
    try:
        with redirect_stdout(said), redirect_stderr(io.StringIO()), initialize_config_dir(config_dir=config_dir):
            GlobalHydra.instance().hydra.shell_completion(config_name=config_name, overrides=[f"query={shell}"])
    except (Exception, SystemExit):  # noqa: BLE001 - e.g. a line argparse refuses: no words, rather than a traceback mid-line
        if os.environ.get("HYDRA_COMP_DEBUG") == "1":
            raise
        sys.exit(0)
    finally:
        GlobalHydra.instance().clear()
    sep = "\n" if shell == "fish" else " "
    words = said.getvalue().split()
    own = own_keys(config_name, config_dir)
    if own is not None:  # groups, or keys the command would not read: not offered
        heads = {k.split(".")[0] for k in own} | {"hydra"}
        words = [w for w in words if re.split(r"[=./@]", w.lstrip("+~"))[0] in heads]
    line = os.environ.get("COMP_LINE", "")
    word = "" if not line or line[-1].isspace() else line.split()[-1]
    key, eq, value = word.lstrip("+").partition("=")
    if eq and (key.rsplit(".", 1)[-1] in PATH_KEYS or key.endswith(("_dir", "_path"))) and (own is None or key in own) \
            and not value.startswith((".", "/", "\\", "~")):
        folder, stem = os.path.split(value)
        try:
            entries = sorted(e for e in os.listdir(folder or ".") if e.startswith(stem) and (stem or not e.startswith(".")))
        except OSError:
            entries = []
        typed = word[: len(word) - len(value)]  # `ckpt_path=`, `+inputs=`
        files = [typed + os.path.join(folder, e) + ("/" if os.path.isdir(os.path.join(folder or ".", e)) else "") for e in entries]
        words = [*(w for w in words if w != word), *files] if files else words  # `ckpt_path=` itself is no completion
    print(sep.join(dict.fromkeys(words)))
    sys.exit(0)
