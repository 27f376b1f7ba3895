"""Ctrl-C or SIGTERM outside a training step (where GracefulStop saves the state): while the stack
loads, MNIST is built, the data is set up, the test runs, or asked twice. SIGTERM (a scheduler's time
limit, `kill`) raises Terminated, a KeyboardInterrupt, so both end as Ctrl-C does; Lightning answers
one inside `fit` or `test` with `sys.exit(1)`, which `stop_signal` sees through. Every stop ends in one
paragraph and status 128 + the signal (mnist99.pipeline). No torch here: the stack may still load."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from mnist99.errors import Interrupted


class Terminated(KeyboardInterrupt):
    """SIGTERM outside a training step, raised where the process stands, as Ctrl-C raises KeyboardInterrupt."""


def _raise_terminated(signum: int, frame) -> None:
    raise Terminated


def stop_on_sigterm() -> None:
    """From now on SIGTERM stops this process as Ctrl-C does. A SIGTERM ignored on purpose (SIG_IGN)
    or handled by someone else stays so; Lightning keeps this handler in the one it puts in for
    `fit` and `test`, and GracefulStop replaces it while training."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_terminated)


def stop_signal(e: BaseException) -> int | None:
    """The signal behind a stop, or None for anything else: a KeyboardInterrupt is Ctrl-C (SIGINT)
    unless it is a Terminated; Lightning's `sys.exit(1)` in answer to either counts as it."""
    if isinstance(e, SystemExit) and isinstance(e.__context__, KeyboardInterrupt):
        e = e.__context__
    if not isinstance(e, KeyboardInterrupt):
        return None
    return int(signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)


def stopped_by(signum: int) -> str:
    """A stop message's first words: the key the user pressed, or the signal a program sent."""
    return "Stopped by " + ("Ctrl-C (SIGINT)" if signum == signal.SIGINT else signal.Signals(signum).name)


def before_training(signum: int) -> str:
    return (f"{stopped_by(signum)} before training began: nothing was trained, and nothing of this attempt "
            "is kept. Run the same command again to start it.")


def stopped_at_once(run_dir: Path, trained: bool, signum: int = signal.SIGINT) -> Interrupted:
    """The Interrupted for a stop that ended the run in `run_dir` where it was. `trained`: this
    attempt took a training step, so its folder is worth keeping."""
    last = Path(run_dir) / "checkpoints" / "last.ckpt"
    if not trained:
        return Interrupted(before_training(signum), int(signum), trained=False)
    if last.is_file():
        what = (f"at once, saving nothing more. {last} holds the state saved last: continue from there with: "
                f"python train.py resume={run_dir}")
    else:
        what = (f"before its first checkpoint, so there is nothing to resume; its logs so far are in {run_dir}. "
                "Run the same command again to start over")
    return Interrupted(f"{stopped_by(signum)} {what}.", int(signum))
