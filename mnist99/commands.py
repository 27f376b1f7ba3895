"""The first lines of the commands (train.py, eval.py, predict.py, the mnist99-* entry points): a stop
in the half-second a command takes to load (Hydra, OmegaConf) ends here, in one line, not in a
traceback. Only the standard library and mnist99.stopping are imported before that."""

from __future__ import annotations

import importlib
import sys

from mnist99.stopping import stop_on_sigterm, stop_signal, stopped_by


def start(command: str) -> None:
    """Load mnist99.cli.<command> and run its main()."""
    stop_on_sigterm()
    try:
        main = importlib.import_module(f"mnist99.cli.{command}").main
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM while Python loads the command: nothing began
        signum = stop_signal(e)
        print(f"\nmnist99: {stopped_by(signum)} before the command began: nothing was written.\n", file=sys.stderr)
        sys.exit(128 + signum)
    main()


def train() -> None:
    start("train")


def evaluate() -> None:
    start("eval")


def predict() -> None:
    start("predict")
