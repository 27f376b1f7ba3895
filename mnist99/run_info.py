"""What a run is recorded with (mnist99.record) and `--version` says: the command as typed, the
package versions, the machine. Light: no torch until the machine is asked for."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

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
