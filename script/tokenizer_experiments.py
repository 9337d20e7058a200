"""Tokenizer experiments: compression (bytes/token) of each tokenizer on each text, and encoding speed.

Example (the handout's questions: TinyStories vs OpenWebText tokenizers, cross-domain, the Pile),
with the tokenizers that `script/train_bpe_tokenizer.py --input data/<text>.txt --vocab-size N`
writes (10K on TinyStories, 32K on OpenWebText):
  uv run python script/tokenizer_experiments.py \\
      --tokenizer ts=model/TinyStoriesV2-GPT4-train-bpe10000 owt=model/owt_train-bpe32000 \\
      --text ts=data/TinyStoriesV2-GPT4-valid.txt owt=data/owt_valid.txt --corpus-gb 825
"""

import argparse
from pathlib import Path

from tqdm import tqdm

from cs336_basics.fileio import atomic_write
from cs336_basics.markdown import markdown_table
from cs336_basics.tokenizer.stats import (
    EOT,
    compression_ratio,
    measure_throughput,
    sample_documents,
)
from cs336_basics.tokenizer.tokenizer import Tokenizer


def named_paths(values: list[str]) -> dict[str, Path]:
    """`NAME=PATH` pairs (a bare PATH is named after its file or folder stem)."""
    named = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep:
            name, path = Path(v).stem, v
        if name in named:
            raise SystemExit(f"error: name {name!r} given twice; use NAME=PATH to tell them apart")
        named[name] = Path(path)
    return named


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tokenizer",
        nargs="+",
        required=True,
        metavar="NAME=FOLDER",
        help="saved tokenizers (folders with vocab.json + merges.txt)",
    )
    parser.add_argument(
        "--text",
        nargs="+",
        required=True,
        metavar="NAME=FILE",
        help="text files; documents are split on <|endoftext|>, else on blank lines",
    )
    parser.add_argument(
        "--docs",
        type=int,
        default=10,
        help="documents sampled per text for compression (default: 10)",
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    parser.add_argument(
        "--throughput-mb",
        type=float,
        default=1.0,
        help="MB of the first text encoded per tokenizer to time throughput (default: 1.0)",
    )
    parser.add_argument(
        "--corpus-gb",
        type=float,
        default=825.0,
        help="corpus size whose encoding time is extrapolated; 825 = the Pile (default: 825)",
    )
    parser.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    args = parser.parse_args()

    tokenizers = {
        name: Tokenizer.from_dir(p, [EOT]) for name, p in named_paths(args.tokenizer).items()
    }
    texts = named_paths(args.text)
    docs = {name: sample_documents(p, args.docs, args.seed) for name, p in texts.items()}

    ratios = {}
    with tqdm(total=len(tokenizers) * len(docs), desc="compression") as bar:
        for tok_name, tok in tokenizers.items():
            for text_name, text_docs in docs.items():
                ratios[tok_name, text_name] = compression_ratio(tok, text_docs)
                bar.update()
    compression = markdown_table(
        ["tokenizer \\ text", *docs],
        [[t, *(ratios[t, x] for x in docs)] for t in tokenizers],
    )

    first_text = next(iter(texts))
    speed_docs = sample_documents(texts[first_text], 10_000, args.seed)
    speed_rows = []
    for tok_name, tok in tqdm(tokenizers.items(), desc="throughput"):
        t = measure_throughput(tok, speed_docs, int(args.throughput_mb * 1e6))
        speed_rows.append(
            [
                tok_name,
                f"{t.bytes_encoded / 1e6:.2f}",
                f"{t.bytes_per_s / 1e6:.3f}",
                f"{t.hours_for(args.corpus_gb * 1e9):,.1f}",
            ]
        )
    speed = markdown_table(
        [
            "tokenizer",
            f"MB encoded ({first_text})",
            "MB/s (1 process)",
            f"hours for {args.corpus_gb:g} GB",
        ],
        speed_rows,
    )

    report = (
        f"Compression: UTF-8 bytes per token on {args.docs} sampled documents per text (seed {args.seed}).\n\n"
        f"{compression}\n\nEncoding throughput (one `encode` call, single process):\n\n{speed}\n"
    )
    print("\n" + report)
    if args.out:
        with atomic_write(args.out, "w", encoding="utf-8") as f:
            f.write(report)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
