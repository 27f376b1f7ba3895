"""`python train.py` / `mnist99-train`: the start-up checks, then Hydra's run of `job`, which runs the
config (mnist99.pipeline), prints its summary or its one paragraph and exits with a code a shell can
act on. Everything before a run starts answers without importing torch or Lightning."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from mnist99 import ddp_sweep, run_info
from mnist99.cli import HYDRA_WHITELIST, checked_argv, fail, print_help, setup_process
from mnist99.config import CONFIG_DIR, new_folder
from mnist99.console import shown
from mnist99.errors import ConfigError, Mnist99Error
from mnist99.resume import resume_argv
from mnist99.stopping import before_training, stop_signal, stopped_by
from mnist99.study_storage import masked, password_to_env
from mnist99.sweep import LAST_SWEEP

# The exit status of a sweep that ran to its end with some jobs failed or diverged; 2 is a command refused
# at start-up (or a single run that failed), 130 and 143 a stop by Ctrl-C and SIGTERM.
SOME_JOBS_FAILED = 3

log = logging.getLogger("mnist99")


def main() -> None:
    """The command line: refuse what cannot run in one paragraph, before Hydra makes a run folder
    (a single run's config is validated here, once), then let Hydra run `job`."""
    setup_process()
    if any(a in ("--help", "-h") for a in sys.argv[1:]):
        print_help()
        return
    # a fresh start when called again in one process (tests, notebooks)
    LAST_SWEEP.jobs = LAST_SWEEP.failed = 0
    new_folder.cache_clear()
    sys.argv = ddp_sweep.child_argv(sys.argv)
    # as typed (before resume_argv), a storage URL's password hidden; that password moves to the environment
    run_info.COMMAND = masked(" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]))
    sys.argv = password_to_env(sys.argv)
    sweep = any(a in ("-m", "--multirun") for a in sys.argv[1:])
    try:
        try:
            sys.argv = checked_argv(resume_argv(sys.argv), "train", check_values=True)
            refuse_occupied_run_dir(sys.argv[1:])
        except Mnist99Error as e:
            fail(str(e))
        hydra_main()
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM outside a run's training (a run's own stops end in `job`)
        signum = stop_signal(e)
        message = (f"{stopped_by(signum)} before the job under way began training: the sweep ends here, and the jobs "
                   "that finished keep their folders." if sweep else before_training(signum))
        print(f"\nmnist99: {message}\n", file=sys.stderr)
        sys.exit(128 + signum)
    ddp_sweep.drop_process_group()  # every DDP process leaves with its group closed: exiting with it alive can fail
    if LAST_SWEEP.failed:  # some jobs of the sweep failed or diverged (its summary says which)
        sys.exit(SOME_JOBS_FAILED)


def job(cfg: DictConfig) -> float | None:
    """One job: run it and print its summary or its one paragraph. A single run exits with 2
    (failed, diverged) or 128+signal (interrupted); a sweep's job returns `failed_value` so the
    sweep goes on. Returns the optimized metric for a sweeper."""
    hc = HydraConfig.get()
    run_dir, multirun = Path(hc.runtime.output_dir), hc.mode == RunMode.MULTIRUN
    try:
        from mnist99.pipeline import optimized_value, run  # the training stack, now that a run starts
    except KeyboardInterrupt:  # seconds of loading on a small CPU, where a user may think better of it (or SIGTERM)
        discard_new_folder(cfg, run_dir)
        raise  # main() says so
    overrides = list(hc.overrides.task)
    if multirun:
        ddp_sweep.announce_job(run_dir, overrides)
    saved_env = ddp_sweep.saved_env()
    try:
        outcome = run(cfg, overrides, checked=not multirun, discard_refused=not multirun)
    finally:
        if multirun and saved_env["LOCAL_RANK"] is None:  # this process started the job's DDP processes (if any)
            ddp_sweep.end_job(saved_env)
    if outcome.status == "crashed":
        if not multirun:
            raise outcome.error
        log.error("The job crashed (a bug in mnist99 or a library, not in the config); the sweep goes on.", exc_info=outcome.error)
        return cfg.get("failed_value")
    if outcome.status == "interrupted" and outcome.signum:  # the user asked the whole command to stop, sweep included
        print(f"\nmnist99: {outcome.message}\n", file=sys.stderr)
        sys.exit(128 + outcome.signum)  # the shell's convention: 130 for Ctrl-C, 143 for SIGTERM
    if outcome.message:  # failed or diverged
        if not multirun:
            fail(outcome.message)
        print(f"\nmnist99: error: {outcome.message}\n", file=sys.stderr)
        return cfg.get("failed_value")  # the sweep goes on with its next job
    summary(cfg, outcome, run_dir)
    return optimized_value(cfg, outcome.metrics)


hydra_main = hydra.main(config_path=CONFIG_DIR, config_name="train", execution_whitelist=HYDRA_WHITELIST)(job)


def summary(cfg: DictConfig, outcome, run_dir: Path) -> None:
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank != 0:
        return
    metrics = outcome.metrics
    model = outcome.choices.get("model", OmegaConf.select(cfg, "model._target_"))
    acc = f"test/acc={metrics['test/acc']:.4f}" if "test/acc" in metrics else "test/acc=n/a"
    print(f"\nmnist99: task={cfg.get('task_name')} model={model} {acc} val/acc_best={metrics.get('val/acc_best', float('nan')):.4f} "
          f"epochs={metrics.get('epochs', 0)} fit={metrics.get('fit_seconds', 0):.1f}s wall={metrics.get('wall_seconds', 0):.1f}s "
          f"run_dir={shown(run_dir)}" + (f"\nmnist99: stopped early at epoch {metrics.get('epochs', 0)} of {outcome.parts.trainer.max_epochs}: "
                                f"{metrics['stopped_early']}" if metrics.get("stopped_early") else ""))


def discard_new_folder(cfg: DictConfig, run_dir: Path) -> None:
    """Remove the folder Hydra made for a run that never began: never a run's own (config.yaml or run.yaml
    in it: a resumed run), nor the folder a DDP process other than the first one shares with it. Only what
    Hydra wrote there goes; a folder holding anything else is kept."""
    if any(os.environ.get(k, "0") != "0" for k in ("LOCAL_RANK", "NODE_RANK", "RANK")):
        return
    if (run_dir / "run.yaml").exists() or (run_dir / "config.yaml").exists():
        return
    shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
    (run_dir / "train.log").unlink(missing_ok=True)
    try:
        run_dir.rmdir()
    except OSError:  # not empty: someone's files (hydra.run.dir=<a folder of theirs>)
        pass


















def refuse_occupied_run_dir(overrides: list[str]) -> None:
    """A `hydra.run.dir=` that names a finished run's folder would have Hydra write over its saved
    config before any check of ours: refused (resume= is the way back into a run's folder)."""
    if (int(os.environ.get("LOCAL_RANK", "0")) > 0 or os.environ.get("SLURM_RESTART_COUNT", "0") != "0"
            or any(a.lstrip("+").startswith("resume_ckpt=") for a in overrides)):
        return  # DDP's extra processes join their run's folder; resume and a requeued SLURM job continue in it
    for a in overrides:
        if a.startswith("hydra.run.dir="):
            folder = Path(a.split("=", 1)[1].strip('"')).expanduser()
            if (folder / "run.yaml").is_file():
                raise ConfigError(f"hydra.run.dir={folder} holds a finished run (run.yaml), and a new run would write over "
                                  f"it. Pick a new folder, or continue that run with: python train.py resume={folder}")


if __name__ == "__main__":
    main()
