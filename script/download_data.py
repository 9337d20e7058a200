"""Download TinyStories (V2-GPT4 train/valid) and the assignment's OpenWebText sample into data/.

Resumable: an interrupted run leaves `<file>.part`, and running again continues from it.
"""

import argparse
import sys

from cs336_basics.download import DATASETS, DownloadError, fetch_dataset


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--only", choices=sorted(DATASETS), help="fetch one dataset (default: all of them)"
    )
    parser.add_argument("--out", default="data", help="folder to write the files into")
    parser.add_argument(
        "--retries", type=int, default=5, help="resume attempts per file after a dropped transfer"
    )
    args = parser.parse_args()

    names = [args.only] if args.only else sorted(DATASETS)
    for name in names:
        print(f"{name}: {', '.join(s.filename for s in DATASETS[name])} -> {args.out}/")
        try:
            paths = fetch_dataset(name, args.out, retries=args.retries)
        except DownloadError as e:
            sys.exit(f"error: {e}")
        for p in paths:
            print(f"  {p}  ({p.stat().st_size / 1e6:,.1f} MB)")


if __name__ == "__main__":
    main()
