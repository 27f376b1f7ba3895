"""Evaluate a finished run: `python eval.py ckpt_path=<run dir or .ckpt>` (see README.md)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # works uninstalled and from any folder

from mnist99.commands import start  # noqa: E402

# Hydra's bash completion (eval "$(python eval.py -sc install=bash)") completes `python <script>` only if the
# script's text holds "@hydra.main": this command's @hydra.main is in mnist99/cli/eval.py.

if __name__ == "__main__":
    start("eval")
