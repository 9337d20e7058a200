"""Encode a text file with a saved tokenizer into a flat token-id array (.npy) for training.

The array is uint16 (uint32 when the vocab has more than 65,536 ids); read it back with
`np.load(path, mmap_mode="r")`. Example:
  uv run python script/tokenize_and_bin.py --tokenizer-dir model/tinystories_10k \\
      --input data/TinyStoriesV2-GPT4-train.txt --output data/tinystories_train.npy
"""

import argparse
import os
import sys
from functools import partial
from pathlib import Path

from cs336_basics.tokenizer.binarize import FileEncoder
from cs336_basics.tokenizer.tokenizer import Tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tokenizer-dir",
        type=Path,
        help="folder holding vocab.json and merges.txt (e.g. model/<name>)",
    )
    parser.add_argument(
        "--vocab", type=Path, help="GPT-2-format vocab JSON (instead of --tokenizer-dir)"
    )
    parser.add_argument(
        "--merges", type=Path, help="GPT-2-format merges file (instead of --tokenizer-dir)"
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
        help="worker processes (default: all cores, here %(default)s)",
    )
    parser.add_argument(
        "--chunk-mb",
        type=float,
        default=1.0,
        help="MB of text per task handed to a worker (default: %(default)s)",
    )
    args = parser.parse_args()

    if args.tokenizer_dir is not None:
        if args.vocab or args.merges:
            parser.error("give either --tokenizer-dir or --vocab and --merges, not both")
        vocab_path, merges_path = (
            args.tokenizer_dir / "vocab.json",
            args.tokenizer_dir / "merges.txt",
        )
    elif args.vocab and args.merges:
        vocab_path, merges_path = args.vocab, args.merges
    else:
        parser.error("give --tokenizer-dir, or both --vocab and --merges")
    if args.output.suffix != ".npy":
        parser.error(f"--output must end in .npy (got {args.output})")
    if args.workers < 1:
        parser.error("--workers must be at least 1")

    try:
        # The helper processes start first and load the tokenizer while this one does.
        load = partial(Tokenizer.from_files, vocab_path, merges_path, args.special_tokens)
        with FileEncoder(load, args.workers) as encoder:
            stats = encoder.encode_file(
                args.input, args.output, chunk_size=max(1, int(args.chunk_mb * 1e6))
            )
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        print(f"interrupted: {args.output} left as it was", file=sys.stderr)
        sys.exit(130)
    print(
        f"wrote {args.output}: {stats.num_tokens:,} tokens ({stats.dtype}) "
        f"from {stats.input_bytes / 1e6:,.1f} MB"
    )
    print(
        f"compression: {stats.bytes_per_token:.3f} bytes/token; "
        f"throughput: {stats.mb_per_second:.1f} MB/s "
        f"({args.workers} workers, {stats.seconds:.3g} s)"
    )


if __name__ == "__main__":
    main()
