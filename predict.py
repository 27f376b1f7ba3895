"""Classify your own digit images with a trained run: `python predict.py ckpt_path=<run dir> inputs=<files or folder>`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # works uninstalled and from any folder

from mnist99.commands import start  # noqa: E402

# Hydra's bash completion (eval "$(python predict.py -sc install=bash)") completes `python <script>` only if the
# script's text holds "@hydra.main": this command's @hydra.main is in mnist99/cli/predict.py.

if __name__ == "__main__":
    start("predict")
