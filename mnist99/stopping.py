"""Ctrl-C or SIGTERM outside a training step.

Inside a training step, GracefulStop (mnist99.callbacks) saves the whole state and stops. Anywhere else
(the training stack still loading, MNIST being built, the set-up, the sanity check, the test, or a
second Ctrl-C asking to stop at once) Python raises KeyboardInterrupt for Ctrl-C, and SIGTERM (a
scheduler's time limit, `kill`, `docker stop`) would end the process where it stands, leaving
run.yaml at `running`. `stop_on_sigterm` makes SIGTERM raise Terminated, a KeyboardInterrupt, so both
take the same way out: Lightning, the PNG writers and the cleanups already end cleanly on one.
Lightning answers one raised inside `fit` or `test` by exiting with status 1, without a word and with
Ctrl-C ignored from then on. These helpers turn all of it into mnist99's Interrupted, so every stop
ends alike: one paragraph, status 128 + the signal (130, 143), run.yaml saying `interrupted`, or no run
folder at all when nothing was trained. Nothing here imports torch: the command line uses it while the
training stack is still loading."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

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


@contextmanager
def stops_become_interrupted(run_dir: Path, trained: Callable[[], bool]) -> Iterator[None]:
    """Around Lightning's fit and test: a Ctrl-C or SIGTERM inside them becomes stopped_at_once's
    Interrupted, with Ctrl-C's handler as it was before (Lightning leaves it ignored)."""
    main = threading.current_thread() is threading.main_thread()  # signal handlers belong to the main thread
    before = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    except (KeyboardInterrupt, SystemExit) as e:
        signum = stop_signal(e)
        if signum is None:
            raise
        if main:
            signal.signal(signal.SIGINT, before)
        raise stopped_at_once(run_dir, trained(), signum) from None
