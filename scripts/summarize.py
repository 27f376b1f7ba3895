"""Rebuild a sweep's summary.csv, summary.md and summary.png from its job folders.

    python scripts/summarize.py outputs/multirun/2026-11-28_14-39-06

Works for a finished sweep, one still running, or one that was interrupted (jobs without a result
show their status: running, failed, diverged, crashed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnist99.sweep import write_summary  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_dir", type=Path, help="a multirun folder (outputs/multirun/<time>)")
    args = p.parse_args()
    if not any(args.sweep_dir.glob("*/run.yaml")):
        sys.exit(f"mnist99: error: {args.sweep_dir} holds no job folders with a run.yaml; pass a folder under outputs/multirun/.")
    write_summary(args.sweep_dir)
    print((args.sweep_dir / "summary.md").read_text())


if __name__ == "__main__":
    main()
