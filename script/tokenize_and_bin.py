"""Encode a text file with a saved tokenizer into a flat token-id array (.npy) for training.

The array is uint16 (uint32 when the vocab has more than 65,536 ids); read it back with
`np.load(path, mmap_mode="r")`. Example, after training a tokenizer with
`script/train_bpe_tokenizer.py --input data/TinyStoriesV2-GPT4-train.txt --vocab-size 10000`:
  uv run python script/tokenize_and_bin.py --tokenizer-dir model/TinyStoriesV2-GPT4-train-bpe10000 \\
      --input data/TinyStoriesV2-GPT4-train.txt --output data/TinyStoriesV2-GPT4-train.npy
"""

import argparse
import os
import sys
from pathlib import Path

from cs336_basics.tokenizer.binarize import encode_file
from cs336_basics.tokenizer.cli import one_line_errors
from cs336_basics.tokenizer.tokenizer import Tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tokenizer-dir",
        type=Path,
        required=True,
        help="folder holding vocab.json and merges.txt (train_bpe_tokenizer.py writes model/<name>)",
    )
    parser.add_argument(
        "--special-tokens",
        nargs="*",
        default=["<|endoftext|>"],
        help="special tokens, kept whole (default: <|endoftext|>; give the flag alone for none)",
    )
    parser.add_argument("--input", type=Path, required=True, help="UTF-8 text file to encode")
    parser.add_argument(
        "--output", type=Path, required=True, help="the .npy file to write (atomically)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes that encode (default: all cores, here %(default)s)",
    )
    parser.add_argument(
        "--chunk-mb",
        type=float,
        default=1.0,
        help="at most this many MB of text per range handed to a process (default: %(default)s)",
    )
    parser.add_argument(
        "--backend",
        choices=["ours", "tiktoken"],
        default="ours",
        help="tiktoken: encode with tiktoken built from the same vocab (faster), after checking "
        "on a sample of the input that it gives our ids (default: %(default)s)",
    )
    args = parser.parse_args()
    if args.output.suffix != ".npy":
        parser.error(f"--output must end in .npy (got {args.output})")
    if args.workers < 1:
        parser.error("--workers must be at least 1")

    with one_line_errors(f"{args.output} left as it was"):
        tokenizer = Tokenizer.from_dir(args.tokenizer_dir, args.special_tokens)
        print(f"encoding {args.input} with {args.workers} workers ({args.backend})", flush=True)
        stats = encode_file(
            tokenizer,
            args.input,
            args.output,
            args.workers,
            progress=sys.stderr.isatty(),
            chunk_size=max(1, int(args.chunk_mb * 1e6)),
            backend=args.backend,
        )
    print(
        f"wrote {args.output}: {stats.num_tokens:,} tokens ({stats.dtype}) "
        f"from {stats.input_bytes / 1e6:,.1f} MB"
    )
    print(
        f"compression: {stats.bytes_per_token:.3f} bytes/token; throughput: "
        f"{stats.mb_per_second:.1f} MB/s with {args.workers} workers "
        f"({stats.mb_per_second / args.workers:.1f} MB/s a worker): {stats.seconds:.3g} s, "
        f"{stats.cpu_seconds:.3g} CPU s in all"
    )


if __name__ == "__main__":
    main()
