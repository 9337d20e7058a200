"""Encoding throughput (MB/s) of our Tokenizer vs tiktoken built from the same vocab and merges.

For each tokenizer (GPT-2's, and a 10K one trained with `train_bpe`) and each text, in one
process and interleaved: our `encode` with an empty cache (cold, as when a file is encoded
once) and again with the cache filled (warm), and tiktoken's single-threaded `encode`. Then
`encode_file` with --workers processes (the tokenize_and_bin.py path: file read, encode, .npy
written, in a fresh process that has loaded the tokenizer) vs tiktoken single-threaded.
Medians over --repeats; ids are checked equal to tiktoken's. Targets: cold >= 0.4x tiktoken;
encode_file with 2 workers >= 0.8x tiktoken.
"""

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tiktoken

from cs336_basics.fileio import atomic_write
from cs336_basics.markdown import markdown_table
from cs336_basics.tokenizer.binarize import PARALLEL_MIN_BYTES, encode_file
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
encode_file runs in a fresh process that has loaded the tokenizer, as tokenize_and_bin.py does
(start-up and loading untimed, as tiktoken's construction). encode_file per CPU s: MB per
CPU-second of that process and its helpers together. Idle-machine
bound: workers x that / tiktoken's, the ratio if each worker had a core to itself (no start-up,
no imbalance). Files under {min_kib} KiB are encoded in one process.

Targets: ours cold >= 0.4x tiktoken; encode_file with 2 workers >= 0.8x tiktoken.
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


# encode_file is timed in a fresh process that has just loaded the tokenizer, as in
# tokenize_and_bin.py: forking helpers from a process that holds large lists (one that ran the
# other contenders) costs more than the script ever pays. Start-up and loading are not timed, as
# tiktoken's construction is not.
def encode_file_speeds(mb: float, folder: Path, path: Path, out: Path, workers: int):
    """(MB per wall-clock second, MB per CPU second) of encode_file in a fresh process."""
    cmd = [sys.executable, __file__, "--encode-file", str(folder), str(path), str(out),
           "--workers", str(workers)]
    wall, cpu = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    return mb / wall, mb / cpu


def encode_file_here(folder: Path, path: Path, out: Path, workers: int) -> tuple[float, float]:
    """(wall-clock s, CPU s of this process and its helpers) of one encode_file call."""
    tok = Tokenizer.from_files(folder / "vocab.json", folder / "merges.txt", [EOT])
    wall, cpu = time.perf_counter(), cpu_seconds()
    encode_file(tok, path, out, workers, progress=False)
    wall = time.perf_counter() - wall
    for helper in multiprocessing.active_children():
        helper.join()  # so that its CPU time is counted
    return wall, cpu_seconds() - cpu


def measure(folder: Path, path: Path, args) -> dict:
    """Median (wall, CPU) MB/s of each contender on one text, runs interleaved, in a fresh
    process (one case's leftovers would slow the next)."""
    cmd = [sys.executable, __file__, "--measure", str(folder), str(path),
           "--repeats", str(args.repeats), "--workers", str(args.workers)]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def measure_here(folder: Path, path: Path, args) -> dict:
    tok = Tokenizer.from_files(folder / "vocab.json", folder / "merges.txt", [EOT])
    enc = tiktoken_for(tok)
    text = path.read_text(encoding="utf-8")
    mb = len(text.encode("utf-8")) / 1e6
    runs: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            fresh = Tokenizer(tok.vocab, tok.merges, [EOT])  # empty cache
            runs.setdefault("cold", []).append(speeds(mb, fresh.encode, text))
            runs.setdefault("warm", []).append(speeds(mb, fresh.encode, text))
            runs.setdefault("peer", []).append(speeds(mb, enc.encode, text, allowed_special="all"))
            runs.setdefault("file", []).append(
                encode_file_speeds(mb, folder, path, Path(tmp) / "ids.npy", args.workers)
            )
            runs.setdefault("peer2", []).append(
                speeds(mb, enc.encode, text, allowed_special="all")
            )
    ids = enc.encode(text, allowed_special="all")
    return {
        "mb": mb,
        "bytes_per_token": len(text.encode("utf-8")) / max(len(ids), 1),
        "same": tok.encode(text) == ids,
        "wall": {k: statistics.median(w for w, _ in v) for k, v in runs.items()},
        "cpu": {k: statistics.median(c for _, c in v) for k, v in runs.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--texts", nargs="+", type=Path, default=TEXTS,
                        help="texts to encode (default: the TinyStories and IMDB validation texts "
                        "and the 34 MB IMDB training text, the size binarization is for)")
    parser.add_argument("--gpt2-dir", type=Path, default=DATA / "gpt2",
                        help="folder with GPT-2's vocab.json and merges.txt (default: %(default)s)")
    parser.add_argument("--tokenizer-dir", type=Path,
                        help="a saved 10K tokenizer (vocab.json + merges.txt); "
                        "default: train one on --train-text")
    parser.add_argument("--train-text", type=Path, default=DATA / "web/imdb_reviews_train.txt",
                        help="text the 10K tokenizer is trained on (default: %(default)s)")
    parser.add_argument("--cache-dir", type=Path, default=Path("model"),
                        help="where the trained 10K tokenizer is kept (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved repeats; medians reported (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2,
                        help="worker processes for encode_file (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/encode.md"),
                        help="markdown output (default: %(default)s)")
    parser.add_argument("--measure", nargs=2, type=Path, metavar=("TOKENIZER_DIR", "TEXT"),
                        help="(used by this script) measure one case here and print JSON")
    parser.add_argument("--encode-file", nargs=3, type=Path,
                        metavar=("TOKENIZER_DIR", "TEXT", "OUT"),
                        help="(used by this script) time one encode_file here and print JSON")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure_here(*args.measure, args)))
        return
    if args.encode_file:
        print(json.dumps(encode_file_here(*args.encode_file, args.workers)))
        return

    tokenizer_dirs = {"GPT-2 (50K)": args.gpt2_dir, "trained 10K": trained_tokenizer_dir(args)}
    load_before = os.getloadavg()[0]
    encode_rows, file_rows = [], []
    for tok_name, folder in tokenizer_dirs.items():
        for path in args.texts:
            r = measure(folder, path, args)
            wall, cpu = r["wall"], r["cpu"]
            print(f"{tok_name} / {path.name}: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in wall.items())
                  + f" MB/s; ids equal: {r['same']}")
            encode_rows.append([
                tok_name, path.name, f"{r['mb']:.1f}", f"{r['bytes_per_token']:.2f}",
                f"{wall['cold']:.1f}", f"{wall['warm']:.1f}", f"{wall['peer']:.1f}",
                f"{wall['cold'] / wall['peer']:.2f}x", f"{wall['warm'] / wall['peer']:.2f}x",
                f"{cpu['cold'] / cpu['peer']:.2f}x", f"{cpu['warm'] / cpu['peer']:.2f}x",
                "yes" if r["same"] else "NO",
            ])
            workers = args.workers if path.stat().st_size >= PARALLEL_MIN_BYTES else 1
            file_rows.append([
                tok_name, path.name, workers, f"{wall['file']:.1f}", f"{wall['peer2']:.1f}",
                f"{wall['file'] / wall['peer2']:.2f}x", f"{cpu['file']:.1f}",
                f"{cpu['peer2']:.1f}", f"{workers * cpu['file'] / cpu['peer2']:.2f}x",
            ])

    report = "\n\n".join([
        f"### Encoding in one process (MB/s, median of {args.repeats} interleaved runs)",
        markdown_table(
            ["tokenizer", "text", "MB", "bytes/token", "ours cold", "ours warm", "tiktoken",
             "cold/tiktoken", "warm/tiktoken", "cold/tiktoken (CPU s)", "warm/tiktoken (CPU s)",
             "ids equal"],
            encode_rows,
        ),
        (f"### encode_file with {args.workers} workers (file -> .npy) vs tiktoken single-thread"
         " (MB/s, medians)"),
        markdown_table(
            ["tokenizer", "text", "workers used", "encode_file", "tiktoken 1 thread", "ratio",
             "encode_file per CPU s", "tiktoken per CPU s", "idle-machine bound"],
            file_rows,
        ),
        NOTES.format(min_kib=PARALLEL_MIN_BYTES >> 10, cores=os.cpu_count(),
                     load_before=load_before, load_after=os.getloadavg()[0]).strip() + "\n",
    ])
    print("\n" + report)
    with atomic_write(args.out, "w", encoding="utf-8") as f:
        f.write(report)


if __name__ == "__main__":
    main()
