"""Test the averaged predictions of finished runs, with optional test-time shifts.

    python scripts/ensemble.py outputs/runs/A outputs/runs/B outputs/runs/C
    python scripts/ensemble.py outputs/multirun/<time>          # every job of a sweep
    python scripts/ensemble.py outputs/multirun/<time>/* --tta 0,0 1,0 -1,0 0,1 0,-1 --json ensemble.json
    python scripts/ensemble.py outputs/multirun/<time> --split val --tta 0,0 1,0 -1,0 0,1 0,-1   # shifts judged on held-out images

Each run folder's `config.yaml` rebuilds its model, whose weights come from `checkpoints/last.ckpt`
(the final weights; with the EMA callback, the averaged ones). Prints each model's test accuracy,
with and without the shifts, and the ensemble's. `--split val` scores them on the runs' held-out
training images instead (runs trained with data.val_size > 0): the way to decide whether shifts
pay without looking at the test set.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load_run(run_dir: Path, checkpoint: str):
    from mnist99.errors import DataError
    from mnist99.evaluate import load

    ckpt = run_dir / "checkpoints" / checkpoint
    for f in (run_dir / "config.yaml", ckpt):
        if not f.is_file():
            raise DataError(f"{f} is missing: pass folders of finished runs (each with config.yaml and checkpoints/{checkpoint}).")
    return load(run_dir, ckpt)


def check_held_out(cfgs) -> None:
    """Refuses to score runs on their validation split unless they all held out the same training
    images: with data.val_size=0 that split is testing/, and other sizes or split seeds differ."""
    from mnist99.errors import ConfigError

    held_out = {(c.data.val_size, c.data.get("split_seed")) for c in cfgs}
    if len(held_out) != 1 or next(iter(held_out))[0] == 0:
        raise ConfigError(
            f"Scoring on held-out images needs runs that held out the same training images (one data.val_size > 0 "
            f"and one data.split_seed), not (val_size, split_seed) {sorted(held_out)}; with data.val_size=0 the "
            "validation split is testing/. Train them with e.g. data.val_size=5000, or score on testing/.")


def run_folders(paths: list[Path]) -> list[Path]:
    """The run folders among `paths`: a sweep's folder stands for its jobs, and files (a sweep's
    multirun.yaml and summary.*, which `outputs/multirun/<time>/*` also matches) are left out."""
    out = []
    for p in paths:
        if p.is_dir() and not (p / "config.yaml").is_file() and any(p.glob("*/run.yaml")):
            out += sorted(r.parent for r in p.glob("*/run.yaml"))
        elif not p.is_file():
            out.append(p)  # a run folder, or a path that does not exist (load_run names what is missing)
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # A shift such as -1,0 is a value, not an option: argparse only knows plain negative numbers.
    p._negative_number_matcher = re.compile(r"^-\d+(,-?\d+)?$")
    p.add_argument("runs", nargs="+", type=Path, help="run folders (outputs/runs/..., outputs/multirun/.../<n>_...)")
    p.add_argument("--tta", nargs="+", default=["0,0"], metavar="DY,DX", help="whole-pixel shifts averaged at test time")
    p.add_argument("--split", choices=["test", "val"], default="test",
                   help="score on testing/ or on the held-out training images (runs with data.val_size > 0, the same split seed)")
    p.add_argument("--checkpoint", default="last.ckpt")
    p.add_argument("--json", type=Path, default=None)
    return p


def main() -> None:
    args = parser().parse_args()

    from mnist99.config import register_resolvers
    from mnist99.ensemble import combine, test_probs
    from mnist99.errors import Mnist99Error
    from mnist99.trusted import instantiate

    register_resolvers()
    shifts = [[int(v) for v in s.split(",")] for s in args.tta]
    args.runs = run_folders(args.runs)
    try:
        runs = [load_run(r, args.checkpoint) for r in args.runs]
        cfg = runs[0][0]
        if args.split == "val":
            check_held_out([c for c, _ in runs])
        dm = instantiate(cfg.data, _convert_="all")
        dm.setup("test")
        probs, labels = [], None
        for run_cfg, model in runs:
            trainer_cfg = {"precision": run_cfg.trainer.precision}
            pr, labels = test_probs(model, dm, shifts, trainer_cfg, args.split)
            probs.append(pr)
    except Mnist99Error as e:
        sys.exit(f"\nmnist99: error: {e}\n")
    result = combine(probs, labels, shifts)
    result["runs"], result["split"] = [str(r) for r in args.runs], args.split
    if args.split == "val":
        print(f"Scored on the {len(labels)} held-out training images (data.val_size), not on testing/.")
    print(f"| run | {'held-out acc' if args.split == 'val' else 'test/acc'} | with shifts |\n| --- | --- | --- |")
    for i, r in enumerate(args.runs):
        print(f"| {r} | {result.get(f'test/acc_member{i}', float('nan')):.2%} | {result[f'test/acc_member{i}_tta']:.2%} |")
    if "test/acc_members_mean" in result:
        print(f"| mean ± std | {result['test/acc_members_mean']:.2%} ± {result['test/acc_members_std']:.3%} | |")
        print(f"| ensemble, no shifts | {result['test/acc_ensemble_no_tta']:.2%} | |")
    if shifts != [[0, 0]]:
        print(f"| ensemble, {len(shifts)} shifts | | {result['test/acc']:.2%} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
