"""Train a Transformer LM: `uv run python script/train.py --help` (cs336_basics/training/run.py)."""

import sys

from cs336_basics.training.run import main

if __name__ == "__main__":
    sys.exit(main())
