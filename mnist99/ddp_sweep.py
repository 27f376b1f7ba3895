"""DDP jobs inside a Hydra sweep (`python train.py -m trainer=ddp ...`), which Lightning has no public API
for: the extra processes' command line, a finished job's exit codes, Lightning's child-process observer
and the DDP variables it leaves set. It reads Lightning internals, so only the versions it was tested
with (TESTED_LIGHTNING) run it."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from mnist99.errors import ConfigError

if TYPE_CHECKING:
    import lightning as L

log = logging.getLogger("mnist99")

# Minor versions of `lightning` this module was tested with (its tests: tests/test_launchers.py).
TESTED_LIGHTNING = ("2.6",)

# Set by Lightning in the process that starts DDP's other processes, and never unset: the next job of a sweep
# would take LOCAL_RANK as a sign that someone else starts them, and wait forever.
DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")

# The launchers of this job's trainers: the ones that start DDP's extra processes hold them.
LAUNCHERS: list = []


def uses_ddp(cfg: DictConfig) -> bool:
    return "ddp" in str(cfg.trainer.get("strategy", ""))


def check_supported(cfg: DictConfig) -> None:
    """Refuse a DDP job inside a sweep on a Lightning version this module was not tested with."""
    version = metadata.version("lightning")
    if uses_ddp(cfg) and not version.startswith(tuple(f"{v}." for v in TESTED_LIGHTNING)):
        raise ConfigError(f"A DDP job inside a sweep (-m with trainer.strategy={cfg.trainer.strategy}) needs parts of Lightning "
                          f"that have no public API, and mnist99 was tested with lightning "
                          f"{', '.join(v + '.x' for v in TESTED_LIGHTNING)}; this environment has lightning {version}. Run the "
                          f"DDP jobs one at a time (without -m), or install a tested version: "
                          f"pip install 'lightning=={TESTED_LIGHTNING[-1]}.*'.")


def track(trainer: L.Trainer) -> None:
    """Remember a trainer's launcher, whose `procs` are the DDP processes it starts."""
    LAUNCHERS.append(getattr(trainer.strategy, "launcher", None))


def saved_env() -> dict[str, str | None]:
    return {k: os.environ.get(k) for k in DDP_ENV}


def announce_job(run_dir: Path, overrides: list[str]) -> None:
    """For DDP's extra processes, started with this process's command line: see child_argv()."""
    os.environ["MNIST99_JOB_DIR"] = str(run_dir)
    os.environ["MNIST99_JOB_OVERRIDES"] = json.dumps(list(overrides))


def child_argv(argv: list[str]) -> list[str]:
    """Lightning starts each extra DDP process with the parent's own command line. Inside a multirun that is the whole
    sweep (`-m model=a,b ...`), which would run every job again into a new sweep folder; the child gets this job's
    overrides and this job's folder instead."""
    if (int(os.environ.get("LOCAL_RANK", "0")) == 0 or "MNIST99_JOB_OVERRIDES" not in os.environ
            or not any(a in ("-m", "--multirun") for a in argv)):
        return argv
    name = [a for a in argv if a.startswith("hydra.job.name=")]
    job_dir = os.environ["MNIST99_JOB_DIR"].replace('"', '\\"')
    return [argv[0], *json.loads(os.environ["MNIST99_JOB_OVERRIDES"]), f'hydra.run.dir="{job_dir}"', "hydra.output_subdir=null", *name[-1:]]


def drop_process_group() -> None:
    torch = sys.modules.get("torch")  # None when no run started (--help, --cfg job): nothing to drop
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def end_job(saved: dict[str, str | None]) -> None:
    """After a DDP job of a sweep, leave the process as the next job expects it: the job's processes
    exited, no process group, the environment as before. Lightning's child-process observer kills this
    process (and the sweep) when one of them exits with an error, even after the job: so their exit codes
    are read here (a warning), and the observer is left nothing to watch."""
    children = [p for launcher in LAUNCHERS for p in getattr(launcher, "procs", None) or []]
    LAUNCHERS.clear()
    for proc in children:
        if not isinstance(proc, subprocess.Popen):  # ddp_spawn's processes (multiprocessing), ended with their fit or test
            proc.join(timeout=300)
            code = proc.exitcode
        else:
            try:
                code = proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
        if code:
            log.warning("DDP process %d of this job exited with code %s after the job ended.", proc.pid, code)
    for thread in threading.enumerate():
        watched = getattr(thread, "_child_processes", None)
        if type(thread).__name__ == "_ChildProcessObserver" and watched and set(map(id, watched)) <= set(map(id, children)):
            thread._child_processes = []
    drop_process_group()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
