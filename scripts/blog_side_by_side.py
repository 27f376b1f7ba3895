"""fastai's own blog recipe beside mnist99's `experiment=blog_<arch>`, one after the other on the
same machine and the same PNG tree: test accuracy and seconds per epoch of each, as a table.

    python scripts/blog_side_by_side.py                      # ResNet-18, 1 epoch each (~20 min on 2 CPU cores)
    python scripts/blog_side_by_side.py --epochs 5 --json outputs/side_by_side.json

fastai is never a dependency of mnist99: it runs from a virtual environment of its own, through
scripts/fastai_blog.py (which does not import mnist99), made once with

    python3 -m venv .venv-fastai
    .venv-fastai/bin/pip install torch==2.14.1 torchvision==0.29.1 fastai==2.8.12

(`--fastai-python` or $FASTAI_PYTHON points elsewhere). Each side gets every core and the same
one-cycle length (`--epochs`), so the epoch figures compare like with like; mnist99 runs first,
so the PNG tree is prepared (from $MNIST99_SOURCE or the usual sources) before fastai reads it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    return next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())


def epoch_scalars(run_dir: Path, tags: tuple[str, ...]) -> dict[str, list[float]]:
    """The per-epoch values of `tags` from the run's TensorBoard event files, in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [e.value for e in sorted(events.Scalars(tag), key=lambda e: e.step)] for tag in tags}


def run_mnist99(arch: str, epochs: int, seed: int, data_dir: Path, run_dir: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, str(ROOT / "train.py"), f"experiment=blog_{arch}", f"trainer.max_epochs={epochs}",
           f"seed={seed}", f"data.data_dir={data_dir}", f"hydra.run.dir={run_dir}", "trainer.enable_progress_bar=false", *extra]
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    wall = time.perf_counter() - start
    scalars = epoch_scalars(run_dir, ("val/acc", "time/epoch_seconds", "test/acc"))
    return {
        "accuracy_per_epoch": scalars["val/acc"],  # validated on testing/, as the blog's recipe does
        "seconds_per_epoch": scalars["time/epoch_seconds"],
        "final_accuracy": scalars["test/acc"][-1],
        "wall_seconds": round(wall, 1),
        "run_dir": str(run_dir),
    }


def run_fastai(python: str, arch: str, epochs: int, seed: int, data_dir: Path, out: Path) -> dict:
    cmd = [python, str(ROOT / "scripts" / "fastai_blog.py"), str(data_dir), f"--arch={arch}", f"--epochs={epochs}",
           f"--seed={seed}", f"--json={out}"]
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    wall = time.perf_counter() - start
    result = json.loads(out.read_text())
    return {
        "accuracy_per_epoch": [e["accuracy"] for e in result["per_epoch"]],
        "seconds_per_epoch": [e["seconds"] for e in result["per_epoch"]],
        "final_accuracy": result["final_accuracy"],
        "wall_seconds": round(wall, 1),
        "versions": result["versions"],
    }


def table(results: dict[str, dict]) -> str:
    epochs = max(len(r["accuracy_per_epoch"]) for r in results.values())
    lines = ["| run | " + " | ".join(f"epoch {i + 1}" for i in range(epochs)) + " | s/epoch (mean) | wall s |",
             "| --- |" + " --- |" * (epochs + 2)]
    for name, r in results.items():
        accs = " | ".join(f"{a:.2%}" for a in r["accuracy_per_epoch"])
        secs = r["seconds_per_epoch"]
        lines.append(f"| {name} | {accs} | {sum(secs) / len(secs):.0f} | {r['wall_seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet18", choices=("resnet18", "resnet34", "resnet50", "resnet152"))
    parser.add_argument("--epochs", type=int, default=1, help="one-cycle length for both (the blog: 5)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data" / "mnist_png", help="the PNG tree both read")
    parser.add_argument("--fastai-python", default=os.environ.get("FASTAI_PYTHON", str(ROOT / ".venv-fastai" / "bin" / "python")))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra override for mnist99's run (repeatable), e.g. --set trainer.gpus=1")
    parser.add_argument("--out", type=Path, default=None, help="folder for both runs (default: outputs/side_by_side/<time>)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    args = parser.parse_args(argv)
    if not Path(args.fastai_python).is_file():
        parser.error(f"no Python at {args.fastai_python}: make fastai's venv as this script's docstring says, "
                     "or point --fastai-python / $FASTAI_PYTHON at one")

    out = args.out or ROOT / "outputs" / "side_by_side" / time.strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)
    results = {
        f"mnist99 experiment=blog_{args.arch}": run_mnist99(args.arch, args.epochs, args.seed, args.data_dir, out / "mnist99", args.set),
        f"fastai vision_learner({args.arch})": run_fastai(args.fastai_python, args.arch, args.epochs, args.seed,
                                                          args.data_dir, out / "fastai.json"),
    }
    import torch

    report = {"machine": f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}",
              "arch": args.arch, "epochs": args.epochs, "seed": args.seed, "results": results}
    text = f"{report['machine']}; {args.arch}, fit_one_cycle({args.epochs}), seed {args.seed}, test accuracy after each epoch\n\n{table(results)}"
    print("\n" + text)
    (out / "side_by_side.md").write_text(text + "\n")
    (out / "side_by_side.json").write_text(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
