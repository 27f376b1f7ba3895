"""Workers of one study, measured side by side on this machine: an N-trial Optuna study run by one worker
with every core's threads, against the same study run by one worker per core, one thread each, all started
together on a fresh SQLite storage. Prints a Markdown table (wall seconds, mean ± std over repeats, and
their ratio); the runs alternate, so a slow minute of the machine hits both.

    python scripts/benchmark_workers.py                         # 8 trials, 2 repeats, data/mnist_png
    python scripts/benchmark_workers.py --trials 8 --repeats 3 --data-dir /work/data/mnist_png

By default the trials are conf/hparams_search/optuna.yaml's (model, batch size, learning rate, weight decay),
each a tenth of an epoch. The second worker samples other trials than the lone worker's (its own seed), so
the two setups do comparable, not identical, work: take several repeats. `--set model=lenet --set
data.batch_size=256` makes every trial the same model and batch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mnist99.run_info import machine  # noqa: E402

DEFAULT_SET = ["trainer.max_epochs=1", "trainer.limit_train_batches=0.1"]


def study(workers: int, threads: int, trials: int, data_dir: Path, extra: list[str]) -> float:
    """Wall seconds from the first worker's start to the last one's exit, on a fresh storage."""
    with tempfile.TemporaryDirectory(prefix="mnist99-workers-") as tmp:
        cmd = [sys.executable, str(ROOT / "train.py"), "-m", "hparams_search=optuna", f"hydra.sweeper.n_trials={trials}",
               f"hydra.sweeper.storage=sqlite:///{tmp}/study.db", f"data.data_dir={data_dir}", f"paths.log_dir={tmp}", *extra]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        start = time.perf_counter()
        procs = [subprocess.Popen(cmd, env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for _ in range(workers)]
        for p in procs:
            _, err = p.communicate()
            if p.returncode:
                sys.exit(f"benchmark_workers: a worker exited with {p.returncode}:\n{err[-2000:]}")
        return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--data-dir", type=Path, default=ROOT / "data" / "mnist_png")
    p.add_argument("--set", action="append", default=None, metavar="KEY=VALUE",
                   help=f"the trials' overrides, repeatable (default: {' '.join(DEFAULT_SET)})")
    args = p.parse_args()
    cores = os.cpu_count() or 1
    extra = args.set or DEFAULT_SET
    one, many = [], []
    for _ in range(args.repeats):
        one.append(study(1, cores, args.trials, args.data_dir, extra))
        many.append(study(cores, 1, args.trials, args.data_dir, extra))
    fmt = lambda v: f"{statistics.fmean(v):.1f} ± {statistics.stdev(v):.1f}" if len(v) > 1 else f"{v[0]:.1f}"  # noqa: E731
    print(f"{args.trials}-trial study, {args.repeats} repeats, on {machine()}; trials: {' '.join(extra)}\n")
    print("| workers | threads each | wall s |\n| --- | --- | --- |")
    print(f"| 1 | {cores} | {fmt(one)} |\n| {cores} | 1 | {fmt(many)} |")
    print(f"\nratio ({cores} workers / 1 worker): {statistics.fmean(many) / statistics.fmean(one):.2f}")


if __name__ == "__main__":
    main()
