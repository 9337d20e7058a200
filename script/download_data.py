"""Download TinyStories (V2-GPT4 train/valid) and the assignment's OpenWebText sample into data/.

Files come from the Hugging Face Hub through huggingface_hub: HF_ENDPOINT selects a mirror,
HF_TOKEN (or `hf auth login`) a token; a dropped connection resumes where it stopped. Files
already in the folder are kept as they are.
"""

import argparse
import sys

from cs336_basics.download import DATASETS, DownloadError, fetch_dataset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only", choices=sorted(DATASETS), help="fetch one dataset (default: all of them)"
    )
    parser.add_argument(
        "--out", default="data", help="folder to write the files into (default: %(default)s)"
    )
    parser.add_argument(
        "--endpoint", help="the Hub's address (default: $HF_ENDPOINT, else https://huggingface.co)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds to wait for the Hub's first answer (default: %(default)s)",
    )
    args = parser.parse_args(argv)

    names = [args.only] if args.only else sorted(DATASETS)
    for name in names:
        print(f"{name}: {', '.join(s.filename for s in DATASETS[name])} -> {args.out}/")
        try:
            paths = fetch_dataset(name, args.out, endpoint=args.endpoint, timeout=args.timeout)
        except DownloadError as e:
            sys.exit(f"error: {e}")
        for p in paths:
            print(f"  {p}  ({p.stat().st_size / 1e6:,.1f} MB)")


if __name__ == "__main__":
    main()
