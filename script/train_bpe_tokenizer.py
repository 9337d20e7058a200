"""Train a byte-level BPE tokenizer on a text file; save GPT-2-format vocab.json and merges.txt.

Example (writes model/TinyStoriesV2-GPT4-train-bpe10000/, which tokenize_and_bin.py then reads):
  uv run python script/train_bpe_tokenizer.py --input data/TinyStoriesV2-GPT4-train.txt --vocab-size 10000
"""

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import psutil

from cs336_basics.tokenizer.bpe import train_bpe
from cs336_basics.tokenizer.cli import one_line_errors
from cs336_basics.tokenizer.tokenizer import Tokenizer


class PeakMemory:
    """Samples the resident memory of this process and all its descendants in a thread."""

    def __init__(self, interval: float = 0.1):
        self.peak = 0
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:  # exited between listing and reading
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self._interval)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--input", type=Path, required=True, help="UTF-8 training text")
    ap.add_argument(
        "--vocab-size",
        type=int,
        default=10_000,
        help="total vocab: special tokens + 256 bytes + merges (default: %(default)s)",
    )
    ap.add_argument(
        "--special-tokens",
        nargs="*",
        default=["<|endoftext|>"],
        help="special tokens, ids 0..k-1 in this order; pass none for no special token "
        "(default: %(default)s)",
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes counting pre-tokens (default: all cores)",
    )
    ap.add_argument(
        "--name", default=None, help="tokenizer name (default: <input stem>-bpe<vocab size>)"
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder for vocab.json and merges.txt (default: model/<name>)",
    )
    ap.add_argument(
        "--show-longest",
        type=int,
        default=10,
        help="longest tokens to print (default: %(default)s)",
    )
    args = ap.parse_args()

    name = args.name or f"{args.input.stem}-bpe{args.vocab_size}"
    out = args.out or Path("model") / name
    with one_line_errors(f"nothing written to {out}"):
        print(
            f"training {args.vocab_size:,}-token BPE on {args.input} "
            f"({args.workers or os.cpu_count()} workers, special tokens {args.special_tokens})",
            flush=True,
        )
        start = time.perf_counter()
        with PeakMemory() as memory:
            vocab, merges = train_bpe(
                args.input,
                args.vocab_size,
                args.special_tokens,
                num_workers=args.workers,
                progress=sys.stderr.isatty(),
            )
        seconds = time.perf_counter() - start
        Tokenizer(vocab, merges, args.special_tokens).save_dir(out)

    print(f"done in {seconds:.1f} s, peak memory {memory.peak / 2**20:.0f} MiB (all processes)")
    if len(vocab) < args.vocab_size:
        print(f"stopped early: no pair left to merge after {len(merges):,} merges")
    print(f"wrote {out}: {len(vocab):,} tokens, {len(merges):,} merges")
    longest = sorted(vocab.values(), key=len, reverse=True)[: args.show_longest]
    print("longest tokens:")
    for token in longest:
        print(f"  {len(token):3d} bytes  {token.decode('utf-8', errors='replace')!r}")


if __name__ == "__main__":
    main()
