"""Evaluate a finished run: `python eval.py ckpt_path=<run dir or .ckpt>` (see README.md)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # works uninstalled and from any folder

try:
    from mnist99.cli.eval import main  # noqa: E402
except KeyboardInterrupt:  # Ctrl-C in the first half-second, while Python loads the command
    print("\nmnist99: Stopped by Ctrl-C (SIGINT) before it began: nothing was written.\n", file=sys.stderr)
    sys.exit(130)

if __name__ == "__main__":
    main()
