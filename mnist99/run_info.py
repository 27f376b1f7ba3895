"""What a run leaves beside its outputs so it can be understood and repeated: the resolved config,
the command-line overrides, the package versions, and at the end its status and metrics."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

# The command line as the user typed it (set by train.main before rewriting it for a resume).
COMMAND: str | None = None

PACKAGES = ("mnist99", "torch", "torchvision", "lightning", "torchmetrics", "hydra-core", "omegaconf", "tensorboard", "numpy", "pillow")


def machine() -> str:
    """The CPU by name, its cores and vector instructions, and the GPU if one is visible: timings
    mean nothing without them."""
    import torch

    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores ({torch.backends.cpu.get_cpu_capability()}){gpu}"


def package_versions() -> dict[str, str]:
    """The installed version of each of PACKAGES, read without importing them (`--version` uses it)."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform(), "machine": machine(), **package_versions()}
    try:
        root = Path(__file__).resolve().parents[1]
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if commit.returncode == 0:
            out["git_commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def save_config(cfg: DictConfig, run_dir: Path, choices: dict[str, str] | None = None) -> None:
    """The resolved config as config.yaml in run_dir, written once as the run starts, with the
    config-group choices it was composed from: what ran. resume= composes it again, eval.py,
    predict.py and sweep summaries read it. What the run finds out on the way is merged in first
    (build.with_found: the data's class count, a learning rate lr_find chose)."""
    from lightning.pytorch.utilities import rank_zero_only  # a run has it loaded already

    if rank_zero_only.rank != 0:
        return
    saved = OmegaConf.to_container(cfg, resolve=True)
    if choices:
        saved["choices"] = dict(choices)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(saved), Path(run_dir) / "config.yaml")


def keep_earlier_metrics(loggers: list) -> None:
    """Lightning's CSVLogger deletes a metrics.csv it finds in its folder as it starts: the rows of
    a resumed run's earlier attempts are kept, the first attempt's as metrics-1.csv, the next as
    metrics-2.csv, ..., and this attempt writes metrics.csv."""
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank != 0:
        return
    for logger in loggers:
        earlier = Path(logger.log_dir) / "metrics.csv" if isinstance(logger, CSVLogger) else None
        if earlier is not None and earlier.is_file():
            n = 1
            while (kept := earlier.with_name(f"metrics-{n}.csv")).exists():
                n += 1
            earlier.rename(kept)


class RunRecord:
    """`run.yaml` in the run folder, rewritten as the run moves from running to its end state."""

    def __init__(self, run_dir: Path, cfg: DictConfig, overrides: list[str], choices: dict[str, str] | None = None):
        self.path = Path(run_dir) / "run.yaml"
        self.start = time.time()
        resumed = cfg.get("resume_ckpt") and self.path.is_file()
        self.earlier_text = self.path.read_text() if resumed else None  # put back if this attempt is refused
        config = self.path.parent / "config.yaml"
        self.earlier_config = config.read_text() if resumed and config.is_file() else None
        earlier = (yaml.safe_load(self.earlier_text) or {}) if resumed else {}
        self.data: dict[str, Any] = {
            "status": "running",
            "command": COMMAND or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "overrides": list(overrides),
            "choices": dict(choices or {}),  # the config-group options: model, optimizer, experiment...
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "versions": versions(),
        }
        if earlier:  # a resumed run keeps what it was started with, and says when it went on
            self.data["overrides"] = earlier.get("overrides", self.data["overrides"])
            self.data["started"] = earlier.get("started", self.data["started"])
            self.data["resumed"] = [*earlier.get("resumed", []), {"at": time.strftime("%Y-%m-%d %H:%M:%S"),
                                    "from": str(cfg.resume_ckpt), "command": self.data["command"]}]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.write()

    @property
    def seconds(self) -> float:
        return time.time() - self.start

    def finish(self, status: str, **fields: Any) -> None:
        self.data.update(status=status, wall_seconds=round(self.seconds, 1), **fields)
        self.write()

    def discard(self) -> None:
        """Leave no trace of a run refused before it trained: a new run's folder goes (it is not a
        run that predict.py, eval.py or resume= should find), a resumed run's record is as before."""
        if self.earlier_text is not None:
            self.path.write_text(self.earlier_text)
            if self.earlier_config is not None:
                (self.path.parent / "config.yaml").write_text(self.earlier_config)
        else:
            shutil.rmtree(self.path.parent, ignore_errors=True)

    def write(self) -> None:
        self.path.write_text(yaml.safe_dump(self.data, sort_keys=False))
