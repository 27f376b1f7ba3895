"""This process's share of the machine, worked out from the config and the launcher without
changing the config: CPU threads and a GPU per job under a parallel launcher, and no SyncBatchNorm
on a CPU. build_trainer passes the trainer settings on as its own arguments."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("mnist99")


def launcher() -> tuple[str, DictConfig | None]:
    """(the Hydra launcher's _target_, its config), or ("", None) outside a Hydra run."""
    if not HydraConfig.initialized():
        return "", None
    hc = HydraConfig.get()
    return str(OmegaConf.select(hc, "launcher._target_", default="") or ""), hc


def share_cpu() -> None:
    """Under hydra/launcher=joblib with N jobs at once (the launcher's n_jobs, or the Optuna sweeper's
    if fewer), each job gets cores/N threads (N jobs each
    running every core's worth of threads slow each other down); under submitit, cpus_per_task."""
    target, hc = launcher()
    cores = os.cpu_count() or 1
    if "JoblibLauncher" in target:
        n = OmegaConf.select(hc, "launcher.n_jobs", default=1) or 1
        n = cores if n < 0 else n
        if "StudySweeper" in str(OmegaConf.select(hc, "sweeper._target_", default="")):  # it launches n_jobs trials at a time
            n = min(n, OmegaConf.select(hc, "sweeper.n_jobs", default=n) or n)
        torch.set_num_threads(max(1, cores // n))
    elif "Submitit" in target:
        cpus = OmegaConf.select(hc, "launcher.cpus_per_task", default=None)
        if cpus:
            torch.set_num_threads(int(cpus))


def trainer_settings(cfg: DictConfig) -> dict[str, Any]:
    """Trainer arguments over cfg.trainer's: a joblib job on a machine with several GPUs gets GPU
    job_number % count; SyncBatchNorm, which needs CUDA, is off on a CPU (DDP then averages the
    gradients and keeps each process's BatchNorm statistics its own)."""
    settings: dict[str, Any] = {}
    on_cpu = cfg.trainer.get("accelerator") == "cpu" or not torch.cuda.is_available()
    if cfg.trainer.get("sync_batchnorm") and on_cpu:
        log.info("trainer.sync_batchnorm needs a GPU; running without it on the CPU")
        settings["sync_batchnorm"] = False
    target, hc = launcher()
    gpus = torch.cuda.device_count()
    if ("JoblibLauncher" in target and gpus > 1 and str(cfg.trainer.get("accelerator")) in ("auto", "gpu", "cuda")
            and cfg.trainer.get("devices") in ("auto", 1)):
        settings["devices"] = [int(hc.job.num) % gpus]
    return settings
