"""Encoding throughput (MB/s) of our Tokenizer vs tiktoken built from the same vocab and merges.

For each tokenizer (GPT-2's, and a 10K one trained with `train_bpe`) and each text, in one
process and interleaved: our `encode` with an empty cache (cold, as when a file is encoded
once) and again with the cache filled (warm), and tiktoken's single-threaded `encode`. Then
encoding the file with --workers processes (file read, encode, .npy written) vs tiktoken
single-threaded: as tokenize_and_bin.py does (a FileEncoder whose helpers started, and loaded
the tokenizer, while the process loaded its own), and with `encode_file(tokenizer, ...)`,
which forks its helpers from the loaded process at the call.
Medians over --repeats; ids are checked equal to tiktoken's. Targets: cold >= 0.4x tiktoken;
tokenize_and_bin.py with 2 workers >= 0.8x tiktoken.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import tiktoken

from cs336_basics.fileio import atomic_write
from cs336_basics.markdown import markdown_table
from cs336_basics.tokenizer.binarize import (
    FORK_MIN_BYTES,
    PARALLEL_MIN_BYTES,
    FileEncoder,
    encode_file,
)
from cs336_basics.tokenizer.pretokenize import GPT2_PATTERN
from cs336_basics.tokenizer.tokenizer import Tokenizer

DATA = Path("/work/shared/data")
EOT = "<|endoftext|>"
TEXTS = [
    DATA / "tinystories/tinystories_v1_valid_chunk.txt",
    DATA / "web/imdb_reviews_valid.txt",
    DATA / "web/imdb_reviews_train.txt",
]

NOTES = """
cold: a fresh tokenizer (empty cache), as when a file is encoded once; warm: the same text again.
CPU-second ratios are less disturbed than wall-clock ones by other processes on a busy machine.
Files are encoded in a fresh process each time, timed from when its tokenizer is loaded (as
tiktoken's construction is not timed). Helpers started with the tokenizer: the FileEncoder of
tokenize_and_bin.py, whose helpers start first and load the tokenizer while the process loads
its own. Forked at the call: `encode_file(tokenizer, ...)`, whose helpers are forked from the
process that holds the tokenizer (the fork, and the copy-on-write page faults after it, are
timed). Files under {min_kib} KiB are encoded in one process (under {fork_kib} KiB, encode_file
forks no helpers).

Targets: ours cold >= 0.4x tiktoken; tokenize_and_bin.py with 2 workers >= 0.8x tiktoken.
Machine: {cores} cores, load average {load_before:.1f} before and {load_after:.1f} after the runs.
"""


def tiktoken_for(tok: Tokenizer) -> tiktoken.Encoding:
    specials = {s: tok.special_to_id[s] for s in tok.special_tokens}
    ranks = {b: i for i, b in tok.vocab.items() if i not in specials.values()}
    return tiktoken.Encoding(
        name="peer", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens=specials
    )


def trained_tokenizer_dir(args) -> Path:
    """--tokenizer-dir, else a 10K tokenizer trained with train_bpe on --train-text (cached)."""
    if args.tokenizer_dir is not None:
        return args.tokenizer_dir
    out = args.cache_dir / "bench_10k"
    if not (out / "vocab.json").exists():
        from cs336_basics import train_bpe

        print(f"training a 10K tokenizer on {args.train_text} -> {out}")
        start = time.perf_counter()
        vocab, merges = train_bpe(args.train_text, 10_000, [EOT])
        print(f"  trained in {time.perf_counter() - start:.1f} s")
        Tokenizer(vocab, merges, [EOT]).save(out / "vocab.json", out / "merges.txt")
    return out


def cpu_seconds() -> float:
    """CPU time of this process and of its finished worker processes."""
    usages = map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return sum(r.ru_utime + r.ru_stime for r in usages)


def speeds(mb: float, fn, *args, **kwargs) -> tuple[float, float]:
    """(MB per wall-clock second, MB per CPU second of all processes) of one call fn(*args)."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    fn(*args, **kwargs)
    return mb / (time.perf_counter() - wall), mb / (cpu_seconds() - cpu)


def encode_file_speed(mb: float, folder: Path, path: Path, out: Path, workers: int, mode: str):
    """MB per wall-clock second of encoding the file in a fresh process (one that ran the other
    contenders would fork slower than the script ever does); `mode` is "ready" or "fork"."""
    cmd = [
        sys.executable,
        __file__,
        "--encode-file",
        str(folder),
        str(path),
        str(out),
        "--workers",
        str(workers),
        "--mode",
        mode,
    ]
    return mb / float(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def encode_file_here(folder: Path, path: Path, out: Path, workers: int, mode: str) -> float:
    """Wall-clock seconds of encoding the file, from when this process has its tokenizer."""
    load = partial(Tokenizer.from_files, folder / "vocab.json", folder / "merges.txt", [EOT])
    if mode == "fork":
        tok = load()
        start = time.perf_counter()
        encode_file(tok, path, out, workers, progress=False)
        return time.perf_counter() - start
    with FileEncoder(load, workers) as encoder:
        start = time.perf_counter()
        encoder.encode_file(path, out, progress=False)
        return time.perf_counter() - start


def measure(folder: Path, path: Path, args) -> dict:
    """Median (wall, CPU) MB/s of each contender on one text, runs interleaved, in a fresh
    process (one case's leftovers would slow the next)."""
    cmd = [
        sys.executable,
        __file__,
        "--measure",
        str(folder),
        str(path),
        "--repeats",
        str(args.repeats),
        "--workers",
        str(args.workers),
    ]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def measure_here(folder: Path, path: Path, args) -> dict:
    tok = Tokenizer.from_files(folder / "vocab.json", folder / "merges.txt", [EOT])
    enc = tiktoken_for(tok)
    text = path.read_text(encoding="utf-8")
    mb = len(text.encode("utf-8")) / 1e6
    runs: dict[str, list[tuple[float, float]]] = {}  # (wall, CPU) MB/s
    files: dict[str, list[float]] = {}  # wall MB/s of encoding the file
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            fresh = Tokenizer(tok.vocab, tok.merges, [EOT])  # empty cache
            runs.setdefault("cold", []).append(speeds(mb, fresh.encode, text))
            runs.setdefault("warm", []).append(speeds(mb, fresh.encode, text))
            runs.setdefault("peer", []).append(speeds(mb, enc.encode, text, allowed_special="all"))
            for mode in ("ready", "fork"):
                files.setdefault(mode, []).append(
                    encode_file_speed(mb, folder, path, Path(tmp) / "ids.npy", args.workers, mode)
                )
            files.setdefault("peer", []).append(
                speeds(mb, enc.encode, text, allowed_special="all")[0]
            )
    ids = enc.encode(text, allowed_special="all")
    return {
        "mb": mb,
        "bytes_per_token": len(text.encode("utf-8")) / max(len(ids), 1),
        "same": tok.encode(text) == ids,
        "wall": {k: statistics.median(w for w, _ in v) for k, v in runs.items()},
        "cpu": {k: statistics.median(c for _, c in v) for k, v in runs.items()},
        "file": {k: statistics.median(v) for k, v in files.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--texts",
        nargs="+",
        type=Path,
        default=TEXTS,
        help="texts to encode (default: the TinyStories and IMDB validation texts "
        "and the 34 MB IMDB training text, the size binarization is for)",
    )
    parser.add_argument(
        "--gpt2-dir",
        type=Path,
        default=DATA / "gpt2",
        help="folder with GPT-2's vocab.json and merges.txt (default: %(default)s)",
    )
    parser.add_argument(
        "--tokenizer-dir",
        type=Path,
        help="a saved 10K tokenizer (vocab.json + merges.txt); default: train one on --train-text",
    )
    parser.add_argument(
        "--train-text",
        type=Path,
        default=DATA / "web/imdb_reviews_train.txt",
        help="text the 10K tokenizer is trained on (default: %(default)s)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path("model"),
        help="where the trained 10K tokenizer is kept (default: %(default)s)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="interleaved repeats; medians reported (default: %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="worker processes for encode_file (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench/results/encode.md"),
        help="markdown output (default: %(default)s)",
    )
    parser.add_argument(
        "--measure",
        nargs=2,
        type=Path,
        metavar=("TOKENIZER_DIR", "TEXT"),
        help="(used by this script) measure one case here and print JSON",
    )
    parser.add_argument(
        "--encode-file",
        nargs=3,
        type=Path,
        metavar=("TOKENIZER_DIR", "TEXT", "OUT"),
        help="(used by this script) time encoding one file here, print seconds",
    )
    parser.add_argument(
        "--mode",
        choices=["ready", "fork"],
        default="ready",
        help="(with --encode-file) helpers started with the tokenizer, or forked at the call",
    )
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure_here(*args.measure, args)))
        return
    if args.encode_file:
        print(encode_file_here(*args.encode_file, args.workers, args.mode))
        return

    tokenizer_dirs = {"GPT-2 (50K)": args.gpt2_dir, "trained 10K": trained_tokenizer_dir(args)}
    load_before = os.getloadavg()[0]
    encode_rows, file_rows = [], []
    for tok_name, folder in tokenizer_dirs.items():
        for path in args.texts:
            r = measure(folder, path, args)
            wall, cpu = r["wall"], r["cpu"]
            print(
                f"{tok_name} / {path.name}: "
                + ", ".join(f"{k} {v:.1f}" for k, v in wall.items())
                + "; file: "
                + ", ".join(f"{k} {v:.1f}" for k, v in r["file"].items())
                + f" MB/s; ids equal: {r['same']}"
            )
            encode_rows.append(
                [
                    tok_name,
                    path.name,
                    f"{r['mb']:.1f}",
                    f"{r['bytes_per_token']:.2f}",
                    f"{wall['cold']:.1f}",
                    f"{wall['warm']:.1f}",
                    f"{wall['peer']:.1f}",
                    f"{wall['cold'] / wall['peer']:.2f}x",
                    f"{wall['warm'] / wall['peer']:.2f}x",
                    f"{cpu['cold'] / cpu['peer']:.2f}x",
                    f"{cpu['warm'] / cpu['peer']:.2f}x",
                    "yes" if r["same"] else "NO",
                ]
            )
            workers = args.workers if path.stat().st_size >= PARALLEL_MIN_BYTES else 1
            file = r["file"]
            file_rows.append(
                [
                    tok_name,
                    path.name,
                    workers,
                    f"{file['ready']:.1f}",
                    f"{file['fork']:.1f}",
                    f"{file['peer']:.1f}",
                    f"{file['ready'] / file['peer']:.2f}x",
                    f"{file['fork'] / file['peer']:.2f}x",
                ]
            )

    report = "\n\n".join(
        [
            f"### Encoding in one process (MB/s, median of {args.repeats} interleaved runs)",
            markdown_table(
                [
                    "tokenizer",
                    "text",
                    "MB",
                    "bytes/token",
                    "ours cold",
                    "ours warm",
                    "tiktoken",
                    "cold/tiktoken",
                    "warm/tiktoken",
                    "cold/tiktoken (CPU s)",
                    "warm/tiktoken (CPU s)",
                    "ids equal",
                ],
                encode_rows,
            ),
            (
                f"### Encoding a file with {args.workers} workers (file -> .npy) vs tiktoken"
                " single-thread (MB/s, medians)"
            ),
            markdown_table(
                [
                    "tokenizer",
                    "text",
                    "workers used",
                    "helpers started with the tokenizer",
                    "helpers forked at the call",
                    "tiktoken 1 thread",
                    "ratio (started with)",
                    "ratio (forked at the call)",
                ],
                file_rows,
            ),
            NOTES.format(
                min_kib=PARALLEL_MIN_BYTES >> 10,
                fork_kib=FORK_MIN_BYTES >> 10,
                cores=os.cpu_count(),
                load_before=load_before,
                load_after=os.getloadavg()[0],
            ).strip()
            + "\n",
        ]
    )
    print("\n" + report)
    with atomic_write(args.out, "w", encoding="utf-8") as f:
        f.write(report)


if __name__ == "__main__":
    main()
