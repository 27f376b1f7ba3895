"""Ctrl-C outside a training step.

Inside a training step, GracefulStop (mnist99.callbacks) saves the whole state and stops. Anywhere else
(the training stack still loading, MNIST being built, the set-up, the sanity check, the test, or a
second Ctrl-C asking to stop at once) Python raises KeyboardInterrupt. Lightning answers one raised
inside `fit` or `test` by exiting with status 1, without a word and with Ctrl-C ignored from then on.
These helpers turn both into mnist99's Interrupted, so every stop ends alike: one paragraph, status
130, run.yaml saying `interrupted`, or no run folder at all when nothing was trained. Nothing here
imports torch: the command line uses it while the training stack is still loading."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from mnist99.errors import Interrupted


BEFORE_TRAINING = ("Stopped by Ctrl-C (SIGINT) before training began: nothing was trained, and nothing of this attempt "
                   "is kept. Run the same command again to start it.")


def is_ctrl_c(e: BaseException) -> bool:
    """A KeyboardInterrupt, or Lightning's `sys.exit(1)` in answer to one."""
    return isinstance(e, KeyboardInterrupt) or (isinstance(e, SystemExit) and isinstance(e.__context__, KeyboardInterrupt))


def stopped_at_once(run_dir: Path, trained: bool) -> Interrupted:
    """The Interrupted for a Ctrl-C that stopped the run in `run_dir` where it was. `trained`: this
    attempt took a training step, so its folder is worth keeping."""
    last = Path(run_dir) / "checkpoints" / "last.ckpt"
    if not trained:
        return Interrupted(BEFORE_TRAINING, int(signal.SIGINT), trained=False)
    if last.is_file():
        what = (f"at once, saving nothing more. {last} holds the state saved last: continue from there with: "
                f"python train.py resume={run_dir}")
    else:
        what = (f"before its first checkpoint, so there is nothing to resume; its logs so far are in {run_dir}. "
                "Run the same command again to start over")
    return Interrupted(f"Stopped by Ctrl-C (SIGINT) {what}.", int(signal.SIGINT))


@contextmanager
def ctrl_c_stops(run_dir: Path, trained: Callable[[], bool]) -> Iterator[None]:
    """Around Lightning's fit and test: a Ctrl-C inside them becomes stopped_at_once's Interrupted,
    with Ctrl-C's handler as it was before (Lightning leaves it ignored)."""
    main = threading.current_thread() is threading.main_thread()  # signal handlers belong to the main thread
    before = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    except (KeyboardInterrupt, SystemExit) as e:
        if not is_ctrl_c(e):
            raise
        if main:
            signal.signal(signal.SIGINT, before)
        raise stopped_at_once(run_dir, trained()) from None
