"""Train a model: `python train.py [group=option ...] [key=value ...]` (see README.md)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # works uninstalled and from any folder

from mnist99.commands import start  # noqa: E402

if __name__ == "__main__":
    start("train")
