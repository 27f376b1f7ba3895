"""The first run of a fresh copy, timed as a new user meets it: this checkout's files (tracked and
untracked, not ignored: no data/, no outputs/) copied to a new folder, then `python train.py` there.
Each line of its output is stamped as it arrives, so the table says where the seconds went;
`python -c "import lightning.pytorch"` is timed beside it, before and after, on the same machine.

    python scripts/first_run.py                               # MNIST fetched as a user's first run fetches it
    python scripts/first_run.py --source ../shared/data/mnist # MNIST read from local IDX files
    python scripts/first_run.py -- experiment=fast            # overrides for train.py

Nothing else should run meanwhile: the figures are timings."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # mnist99 from this checkout, installed or not

# the lines that end each step of a first run (mnist99.data.prepare, mnist99.data.cache, mnist99.cli.train)
STEPS = (
    ("Python, Hydra, the start-up checks, torch and Lightning loaded", re.compile(r"^Preparing the MNIST PNG tree")),
    ("MNIST fetched or read, checksums verified", re.compile(r"^(Got verified MNIST files|Reading MNIST IDX files)")),
    ("the PNG tree written", re.compile(r"^Wrote \d+ MNIST PNGs")),
    ("the images decoded (cached), the model built", re.compile(r"^Model: ")),
)
SUMMARY = re.compile(r"^mnist99: .*test/acc=(?P<acc>[\d.]+|n/a) .*fit=(?P<fit>[\d.]+)s wall=(?P<wall>[\d.]+)s")


def fresh_copy(dest: Path) -> Path:
    """The checkout as `git clone` plus its uncommitted changes would give it."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():  # a tracked file deleted in the working tree is not copied
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def import_seconds() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import lightning.pytorch"], check=True)
    return time.perf_counter() - t0


def stamped_run(cmd: list[str], cwd: Path, env: dict) -> tuple[int, float, list[tuple[float, str]]]:
    """(exit status, whole seconds, [(seconds since start, line)]) of cmd, stdout and stderr together."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = [(time.perf_counter() - t0, line.rstrip("\n")) for line in proc.stdout]
    proc.wait()
    return proc.returncode, time.perf_counter() - t0, lines


def steps(lines: list[tuple[float, str]], whole: float) -> tuple[list[tuple[str, float]], dict]:
    """[(step, seconds)] from the stamped lines, and the summary line's test/acc and fit."""
    out, last = [], 0.0
    for name, pattern in STEPS:
        at = next((t for t, line in lines if pattern.search(line)), None)
        if at is not None:  # a step a run did not take (the data already there) has no line
            out.append((name, at - last))
            last = at
    summary = next((m.groupdict() for _, line in lines if (m := SUMMARY.search(line))), None)
    if summary is None:
        return out, {}
    fit = float(summary["fit"])
    out += [("training (fit)", fit), ("the test, figures, run record, exit", whole - last - fit)]
    return out, {"test_acc": None if summary["acc"] == "n/a" else float(summary["acc"]), "fit_seconds": fit}


def cpu() -> str:
    from mnist99.run_info import machine  # torch, only now: the timed commands start from a cold import

    try:  # the family tells AMD's generations apart, all named "AMD EPYC"
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    family = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("cpu family")), "")
    return machine() + (f", family {family}" if family else "")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", type=Path, help="a folder of the four MNIST IDX files (MNIST99_SOURCE); default: as a user's first run")
    p.add_argument("--keep", action="store_true", help="keep the copy (its path is printed)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("overrides", nargs="*", help="for train.py, after --")
    args = p.parse_args()

    env = {k: v for k, v in os.environ.items() if k != "MNIST99_SOURCE"} | {"PYTHONUNBUFFERED": "1"}
    if args.source:
        env["MNIST99_SOURCE"] = str(args.source.resolve())
    folder = Path(tempfile.mkdtemp(prefix="mnist99-first-run-"))
    try:
        fresh_copy(folder)
        before = import_seconds()
        cmd = [sys.executable, "train.py", "trainer.enable_progress_bar=false", *args.overrides]
        code, whole, lines = stamped_run(cmd, folder, env)
        after = import_seconds()
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    if code != 0:
        print("\n".join(line for _, line in lines[-30:]), file=sys.stderr)
        print(f"\nfirst_run: python {' '.join(cmd[1:])} exited with {code}", file=sys.stderr)
        return 1
    table, found = steps(lines, whole)
    result = {"machine": cpu(), "command": "python " + " ".join(cmd[1:]), "wall_seconds": whole,
              "import_lightning_seconds": [before, after], "steps": dict(table), **found}
    print(f"\n{result['command']} in a fresh copy of {ROOT.name} ({'MNIST99_SOURCE=' + env['MNIST99_SOURCE'] if args.source else 'no MNIST99_SOURCE'})")
    print(f"on {result['machine']}\n\n| step | seconds |\n| --- | --- |")
    for name, seconds in table:
        print(f"| {name} | {seconds:.1f} |")
    print(f"| **whole command** | **{whole:.1f}** |\n")
    print(f"test/acc {found.get('test_acc')}; `python -c \"import lightning.pytorch\"` alone: {before:.1f} s before, {after:.1f} s after")
    if args.keep:
        print(f"the copy: {folder}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
