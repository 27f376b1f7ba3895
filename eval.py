"""Evaluate a finished run: `python eval.py ckpt_path=<run dir or .ckpt>` (see README.md)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # works uninstalled and from any folder

from mnist99.commands import start  # noqa: E402

if __name__ == "__main__":
    start("eval")
