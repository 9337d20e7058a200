"""Encoding speed of our Tokenizer vs tiktoken built from the same vocab and merges.

Three tables, each ours against tiktoken's single-threaded `encode` in the same run, interleaved,
as medians; ids are checked equal to tiktoken's everywhere.
1. One process: `encode` with an empty cache (cold, as a file encoded once) and again (warm),
   for GPT-2's vocab and a 10K vocab trained here, each case in a fresh process.
   Target: cold >= 0.45x tiktoken's throughput.
2. `script/tokenize_and_bin.py --workers N` (the script's own timing: from the loaded tokenizer
   to the .npy written) vs tiktoken on one thread, also per core.
   Target: >= 0.8x tiktoken with 2 workers.
3. Documents with long runs (one pre-token of thousands of bytes), ours cold vs tiktoken.
   Targets: <= 20x tiktoken's time; 10x the run <= 15x the time.

    CS336_SHARED_DATA=/work/shared/data uv run python bench/bench_encode.py
"""

import argparse
import base64
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cs336_basics.markdown import markdown_table, publish
from cs336_basics.tokenizer.tokenizer import Tokenizer

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CS336_SHARED_DATA", REPO.parent / "shared" / "data"))
EOT = "<|endoftext|>"
TEXTS = [DATA / "web/imdb_reviews_valid.txt", DATA / "web/imdb_reviews_train.txt"]


def cpu_and_wall(fn, *args, **kwargs) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    fn(*args, **kwargs)
    return time.process_time() - cpu, time.perf_counter() - wall


def in_fresh_process(*args: str) -> dict:
    """What this script prints when run with `args` (a case measured in its own process)."""
    cmd = [sys.executable, __file__, *args]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def one_process_here(folder: Path, path: Path, repeats: int) -> dict:
    """Median (CPU, wall) seconds of ours cold, ours warm and tiktoken on one text."""
    tok = Tokenizer.from_dir(folder, [EOT])
    enc = tok.to_tiktoken()
    text = path.read_text(encoding="utf-8")
    runs: dict[str, list[tuple[float, float]]] = {"cold": [], "warm": [], "tiktoken": []}
    for _ in range(repeats):
        fresh = Tokenizer(tok.vocab, tok.merges, [EOT])  # empty cache
        runs["cold"].append(cpu_and_wall(fresh.encode_to_bytes, text))
        runs["warm"].append(cpu_and_wall(fresh.encode_to_bytes, text))
        runs["tiktoken"].append(cpu_and_wall(enc.encode, text, allowed_special="all"))
    ids = enc.encode(text, allowed_special="all")
    return {
        "mb": len(text.encode("utf-8")) / 1e6,
        "bytes_per_token": len(text.encode("utf-8")) / len(ids),
        "same": tok.encode(text) == ids,
        "cpu": {k: statistics.median(c for c, _ in v) for k, v in runs.items()},
        "wall": {k: statistics.median(w for _, w in v) for k, v in runs.items()},
    }


def one_process_rows(folders: dict[str, Path], args) -> list[list]:
    rows = []
    for name, folder in folders.items():
        for path in args.texts:
            r = in_fresh_process(
                "--one-process", str(folder), str(path), "--repeats", str(args.repeats)
            )
            cpu, wall, mb = r["cpu"], r["wall"], r["mb"]
            print(f"{name} / {path.name}: CPU s {cpu}, ids equal: {r['same']}")
            rows.append(
                [
                    name,
                    path.name,
                    f"{mb:.1f}",
                    f"{r['bytes_per_token']:.2f}",
                    f"{mb / wall['cold']:.1f}",
                    f"{mb / wall['warm']:.1f}",
                    f"{mb / wall['tiktoken']:.1f}",
                    f"{cpu['tiktoken'] / cpu['cold']:.2f}x",
                    f"{cpu['tiktoken'] / cpu['warm']:.2f}x",
                    f"{wall['tiktoken'] / wall['cold']:.2f}x",
                    "yes" if r["same"] else "NO",
                ]
            )
    return rows


def script_seconds(folder: Path, path: Path, workers: int, backend: str) -> tuple[float, float]:
    """(seconds, CPU seconds of all its processes) that tokenize_and_bin.py reports for encoding
    the file, from the loaded tokenizer to the .npy written."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(REPO / "script/tokenize_and_bin.py"), "--tokenizer-dir"]
        cmd += [str(folder), "--input", str(path), "--output", f"{tmp}/ids.npy"]
        cmd += ["--workers", str(workers), "--backend", backend]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    wall, cpu = re.search(r"a worker\): ([0-9.e+-]+) s, ([0-9.e+-]+) CPU s", out).groups()
    return float(wall), float(cpu)


def script_rows(folders: dict[str, Path], args) -> list[list]:
    rows = []
    for name, folder in folders.items():
        enc = Tokenizer.from_dir(folder, [EOT]).to_tiktoken()
        for path in args.texts:
            text = path.read_text(encoding="utf-8")
            mb = len(text.encode("utf-8")) / 1e6
            runs: dict[str, list[tuple[float, float]]] = {"ours": [], "backend": [], "tiktoken": []}
            for _ in range(args.repeats):
                runs["ours"].append(script_seconds(folder, path, args.workers, "ours"))
                runs["backend"].append(script_seconds(folder, path, args.workers, "tiktoken"))
                cpu, wall = cpu_and_wall(enc.encode, text, allowed_special="all")
                runs["tiktoken"].append((wall, cpu))
            wall = {k: statistics.median(w for w, _ in v) for k, v in runs.items()}
            cpu = {k: statistics.median(c for _, c in v) for k, v in runs.items()}
            ratio = wall["tiktoken"] / wall["ours"]
            print(f"{name} / {path.name}: wall s {wall}, CPU s {cpu}")
            rows.append(
                [
                    name,
                    path.name,
                    f"{mb:.1f}",
                    args.workers,
                    f"{mb / wall['ours']:.1f}",
                    f"{mb / wall['tiktoken']:.1f}",
                    f"{ratio:.2f}x",
                    f"{ratio / args.workers:.2f}x",
                    f"{cpu['tiktoken'] / cpu['ours']:.2f}x",
                    f"{mb / wall['backend']:.1f}",
                ]
            )
    return rows


def long_run_documents() -> dict[str, str]:
    """Texts whose pre-tokens include runs of thousands of bytes, as web text has."""
    prose = (DATA / "web/imdb_reviews_valid.txt").read_text(encoding="utf-8")[:20_000]
    blob = base64.b64encode(random.Random(0).randbytes(4_500)).decode()
    web = "".join(
        [prose[:5_000], "=" * 8_000, prose[5_000:10_000], blob, prose[10_000:14_000]]
        + ["ab" * 3_000, prose[14_000:17_000], "🙂" * 1_000, prose[17_000:]]
    )
    return {
        f"web-like: 3 runs and a base64 blob ({len(web.encode()) / 1e3:.0f} KB)": web,
        "`=` x 30,000": "=" * 30_000,
        "`=` x 300,000": "=" * 300_000,
        "`ab` x 30,000": "ab" * 30_000,
        "`ab` x 300,000": "ab" * 300_000,
        "emoji x 30,000": "🙂" * 30_000,
    }


def long_runs_here(folder: Path, repeats: int) -> dict:
    """Median CPU seconds of ours (cold) and tiktoken on each long-run document."""
    tok = Tokenizer.from_dir(folder, [EOT])
    enc = tok.to_tiktoken()
    result = {}
    for name, text in long_run_documents().items():
        ours, theirs = [], []
        for _ in range(repeats):
            fresh = Tokenizer(tok.vocab, tok.merges, [EOT])
            ours.append(cpu_and_wall(fresh.encode, text)[0])
            theirs.append(cpu_and_wall(enc.encode, text, allowed_special="all")[0])
        same = tok.encode(text) == enc.encode(text, allowed_special="all")
        result[name] = (statistics.median(ours), statistics.median(theirs), same)
    return result


def long_run_rows(folders: dict[str, Path], args) -> list[list]:
    rows = []
    for name, folder in folders.items():
        result = in_fresh_process("--long-runs", str(folder), "--repeats", str(args.repeats))
        for doc, (ours, theirs, same) in result.items():
            rows.append(
                [
                    name,
                    doc,
                    f"{ours * 1e3:.1f}",
                    f"{theirs * 1e3:.2f}",
                    f"{ours / theirs:.1f}x",
                    "yes" if same else "NO",
                ]
            )
        for run in ("`=`", "`ab`"):
            small, big = result[f"{run} x 30,000"][0], result[f"{run} x 300,000"][0]
            rows.append([name, f"{run}: x 300,000 / x 30,000", f"{big / small:.1f}x", "", "", ""])
    return rows


def trained_tokenizer_dir(args) -> Path:
    """--tokenizer-dir, else a 10K tokenizer trained on --train-text (kept in --cache-dir)."""
    if args.tokenizer_dir is not None:
        return args.tokenizer_dir
    out = args.cache_dir / "bench_10k"
    if not out.is_dir():
        from cs336_basics import train_bpe

        print(f"training a 10K tokenizer on {args.train_text} -> {out}")
        vocab, merges = train_bpe(args.train_text, 10_000, [EOT])
        Tokenizer(vocab, merges, [EOT]).save_dir(out)
    return out


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--texts",
        nargs="+",
        type=Path,
        default=TEXTS,
        help="texts to encode (default: the 6.4 MB and 34 MB IMDB texts)",
    )
    parser.add_argument("--gpt2-dir", type=Path, default=DATA / "gpt2", help="GPT-2's tokenizer")
    parser.add_argument("--tokenizer-dir", type=Path, help="a 10K tokenizer (default: train one)")
    parser.add_argument(
        "--train-text",
        type=Path,
        default=DATA / "web/imdb_reviews_train.txt",
        help="text the 10K tokenizer is trained on (default: %(default)s)",
    )
    parser.add_argument("--cache-dir", type=Path, default=Path("model"), help="where it is kept")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (medians)")
    parser.add_argument("--workers", type=int, default=2, help="tokenize_and_bin.py --workers")
    parser.add_argument("--only", choices=["one-process", "script", "long-runs"], help="one table")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/encode.md")
    parser.add_argument("--one-process", nargs=2, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--long-runs", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_process:
        print(json.dumps(one_process_here(*args.one_process, args.repeats)))
        return
    if args.long_runs:
        print(json.dumps(long_runs_here(args.long_runs, args.repeats)))
        return

    folders = {"GPT-2 (50K)": args.gpt2_dir, "trained 10K": trained_tokenizer_dir(args)}
    uptime_before = uptime()
    sections = []
    if args.only in (None, "one-process"):
        sections += [
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
                    "cold/tiktoken (CPU s)",
                    "warm/tiktoken (CPU s)",
                    "cold/tiktoken (wall)",
                    "ids equal",
                ],
                one_process_rows(folders, args),
            ),
            "Ratios are throughputs, ours over tiktoken's (higher is better). Cold: a fresh "
            "tokenizer, as a file encoded once; warm: the same text again. CPU-second ratios are "
            "the least disturbed by other processes. Target: cold >= 0.45x.",
        ]
    if args.only in (None, "script"):
        sections += [
            f"### `tokenize_and_bin.py --workers {args.workers}` vs tiktoken on one thread "
            f"(median of {args.repeats})",
            markdown_table(
                [
                    "tokenizer",
                    "text",
                    "MB",
                    "workers",
                    "ours MB/s",
                    "tiktoken MB/s",
                    "ratio",
                    "per core",
                    "per core (CPU s)",
                    "`--backend tiktoken` MB/s",
                ],
                script_rows(folders, args),
            ),
            "The script's own timing: from the loaded tokenizer (workers forked at the call) to "
            "the .npy written; tiktoken encodes the text already in memory. Ratio: our MB/s over "
            "tiktoken's (target >= 0.8x); per core: that over the workers; per core (CPU s): "
            "tiktoken's CPU seconds over those of all our processes, which a busy machine "
            "disturbs least (a quiet machine's ratio is about workers x this).",
        ]
    if args.only in (None, "long-runs"):
        sections += [
            f"### Long runs: ours (cold) vs tiktoken (CPU ms, median of {args.repeats})",
            markdown_table(
                ["tokenizer", "document", "ours ms", "tiktoken ms", "ours/tiktoken", "ids equal"],
                long_run_rows(folders, args),
            ),
            "Times (lower is better). Targets: ours/tiktoken <= 20x on every document; 10x the "
            "run <= 15x the time.",
        ]
    sections.append(
        f"Machine: {os.cpu_count()} cores; `uptime` before: {uptime_before}; after: {uptime()}.\n"
    )
    publish("\n\n".join(sections), args.out)


if __name__ == "__main__":
    main()
