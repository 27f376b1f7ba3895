"""Train a model: `python train.py [group=option ...] [key=value ...]` (see README.md)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # works uninstalled and from any folder

try:
    from mnist99.cli.train import main  # noqa: E402
except KeyboardInterrupt:  # Ctrl-C in the first half-second, while Python loads the command: nothing began
    print("\nmnist99: Stopped by Ctrl-C (SIGINT) before the run began: nothing was written.\n", file=sys.stderr)
    sys.exit(130)

if __name__ == "__main__":
    main()
