"""Benchmark BPE training against HuggingFace `tokenizers`; write bench/results/train_bpe.md.

Every run is a fresh subprocess (so peak memory is clean); the parent polls the resident memory
of that process and all its descendants (workers included) and keeps the peak of the sum. The
two trainers alternate run by run so that load on a shared machine hits both alike; figures are
medians. Times are of the training call alone (no interpreter start-up or imports).

    uv run python bench/bench_train_bpe.py            # 10k vocab on the web and TinyStories texts
    uv run python bench/bench_train_bpe.py --scale    # also the 34 MB text concatenated 10x
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from cs336_basics.markdown import publish

DATA = Path(
    os.environ.get("CS336_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
RESULTS = Path(__file__).resolve().parent / "results" / "train_bpe.md"
SPECIAL = "<|endoftext|>"


def _train_ours(path: str, vocab_size: int, workers: int | None) -> None:
    from cs336_basics.tokenizer.bpe import train_bpe

    train_bpe(path, vocab_size, [SPECIAL], num_workers=workers)


def _train_hf(path: str, vocab_size: int, workers: int | None) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[SPECIAL],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train([path], trainer)


TRAINERS = {"ours": _train_ours, "tokenizers": _train_hf}


def _child(trainer: str, path: str, vocab_size: int, workers: int | None, repeats: int) -> None:
    """Run one trainer `repeats` times in this process; print the seconds of each as JSON."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        TRAINERS[trainer](path, vocab_size, workers)
        seconds.append(time.perf_counter() - start)
    print(json.dumps(seconds))


def run_once(
    trainer: str, path: Path, vocab_size: int, workers: int | None, repeats: int = 1
) -> tuple[list[float], int]:
    """(seconds per repeat, peak resident bytes of the process tree) of one fresh subprocess."""
    cmd = [
        sys.executable,
        __file__,
        "--child",
        trainer,
        str(path),
        str(vocab_size),
        str(workers or 0),
        str(repeats),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        total = 0
        try:
            for p in [root, *root.children(recursive=True)]:
                total += p.memory_info().rss
        except psutil.Error:  # a worker exited between listing and reading it
            pass
        peak = max(peak, total)
        time.sleep(0.02)
    out, _ = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"{trainer} failed on {path} (exit code {proc.returncode})")
    return json.loads(out), peak


def compare(path: Path, vocab_size: int, workers: int | None, runs: int) -> dict:
    """Alternate ours / tokenizers `runs` times: the median time and peak memory of each."""
    times = {name: [] for name in TRAINERS}
    peaks = {name: [] for name in TRAINERS}
    for r in range(runs):
        for name in TRAINERS:
            (seconds,), peak = run_once(name, path, vocab_size, workers)
            times[name].append(seconds)
            peaks[name].append(peak)
            print(
                f"  {path.name} run {r + 1}/{runs} {name}: {seconds:.2f} s, peak {peak / 2**20:.0f} MiB",
                flush=True,
            )
    return {
        name: (statistics.median(times[name]), statistics.median(peaks[name])) for name in TRAINERS
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--web",
        type=Path,
        default=DATA / "web" / "imdb_reviews_train.txt",
        help="large English text, also the base of --scale (default: %(default)s)",
    )
    ap.add_argument(
        "--tinystories",
        type=Path,
        default=DATA / "tinystories" / "tinystories_v1_train_head_lowercase.eot.txt",
        help="TinyStories text (default: %(default)s)",
    )
    ap.add_argument(
        "--small",
        type=Path,
        default=DATA / "gutenberg" / "alice_in_wonderland_alice29.txt",
        help="English text whose first --small-bytes make the autograder speed case (default: %(default)s)",
    )
    ap.add_argument(
        "--small-bytes",
        type=int,
        default=130_000,
        help="size of the speed case (default: %(default)s)",
    )
    ap.add_argument(
        "--vocab-size",
        type=int,
        default=10_000,
        help="vocab size of the big runs (default: %(default)s)",
    )
    ap.add_argument(
        "--workers", type=int, default=None, help="worker processes for ours (default: all cores)"
    )
    ap.add_argument(
        "--runs", type=int, default=3, help="runs of each trainer per corpus (default: %(default)s)"
    )
    ap.add_argument(
        "--scale", action="store_true", help="also train on --web concatenated 10x (slow)"
    )
    ap.add_argument(
        "--scale-runs", type=int, default=1, help="runs of the 10x case (default: %(default)s)"
    )
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        trainer, path, vocab, workers, repeats = args.child
        _child(trainer, path, int(vocab), int(workers) or None, int(repeats))
        return

    cores = psutil.cpu_count()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    lines = [
        "# BPE training: ours vs HuggingFace tokenizers",
        "",
        f"{cores} cores; `uptime` at start: {uptime}. Medians of {args.runs} alternating runs, each a "
        "fresh process; peak memory is the resident memory of the whole process tree (workers included). "
        f"Vocab {args.vocab_size:,} with `{SPECIAL}`.",
        "",
        "| corpus | MB | ours s | tokenizers s | ours/tokenizers time | ours peak MiB | tokenizers peak MiB | no slower? |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    results = {}
    for path in (args.web, args.tinystories):
        res = compare(path, args.vocab_size, args.workers, args.runs)
        results[path] = res
        (ot, om), (ht, hm) = res["ours"], res["tokenizers"]
        ratio = ot / ht  # of the two medians in the row
        lines.append(
            f"| {path.name} | {path.stat().st_size / 1e6:.1f} | {ot:.2f} | {ht:.2f} | {ratio:.2f} | "
            f"{om / 2**20:.0f} | {hm / 2**20:.0f} | {'yes' if ratio <= 1 else 'no'} |"
        )

    with tempfile.TemporaryDirectory() as tmp:
        small = Path(tmp) / "speed_case.txt"
        small.write_bytes(args.small.read_bytes()[: args.small_bytes])
        seconds, _ = run_once("ours", small, 500, args.workers, repeats=5)
        med = statistics.median(seconds)
        lines += [
            "",
            f"Autograder speed case: 500 vocab on the first {args.small_bytes:,} bytes of `{args.small.name}`: "
            f"median {med * 1000:.0f} ms of 5 (min {min(seconds) * 1000:.0f} ms); target 200 ms: "
            f"{'met' if med <= 0.2 else 'NOT met'}.",
        ]

        if args.scale:
            big = Path(tmp) / f"{args.web.stem}_x10.txt"
            with open(big, "wb") as out:
                for _ in range(10):
                    with open(args.web, "rb") as f:
                        shutil.copyfileobj(f, out)
            runs = [
                run_once("ours", big, args.vocab_size, args.workers) for _ in range(args.scale_runs)
            ]
            bt = statistics.median(s for (s,), _ in runs)
            bm = statistics.median(m for _, m in runs)
            ot, om = results[args.web]["ours"]
            lines += [
                "",
                f"Scale: `{args.web.name}` x10 ({big.stat().st_size / 1e6:.0f} MB), ours, median of {args.scale_runs}:",
                "",
                "| input | s | peak MiB |",
                "|---|---:|---:|",
                f"| x1 | {ot:.2f} | {om / 2**20:.0f} |",
                f"| x10 | {bt:.2f} | {bm / 2**20:.0f} |",
                f"| ratio | {bt / ot:.2f} (target <= 10) | {bm / om:.2f} (target <= 1.3) |",
            ]

    end = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    lines += ["", f"`uptime` at the end: {end}."]
    publish("\n".join(lines), RESULTS)


if __name__ == "__main__":
    main()
