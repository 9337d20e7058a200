"""Data preparation shared by every run: raw text -> BPE tokenizer -> token arrays.

Each stage runs only when its output is missing, so a second run (or a second experiment on
the same data) starts training at once. Outputs that exist are trusted as they are: change
the paths in the config when the text or the tokenizer size changes.
"""

import os
import time
from pathlib import Path

from cs336_basics.config import DataConfig
from cs336_basics.demo_corpus import write_corpus
from cs336_basics.fileio import atomic_write
from cs336_basics.tokenizer.files import VOCAB_FILE, read_vocab_json

TINYSTORIES_FILES = (
    "TinyStoriesV2-GPT4-train.txt",
    "TinyStoriesV2-GPT4-valid.txt",
)  # as downloaded
DEMO_VAL_FRACTION = (
    0.05  # the generated validation text is this fraction of the training text's size
)


def slice_text(src: Path, dest: Path, max_bytes: int, special_tokens: list[str]) -> Path:
    """Copy at most `max_bytes` of `src` to `dest`, cut after the last whole document (or
    line) so no story and no UTF-8 character is split; return the path to read from."""
    if src.stat().st_size <= max_bytes:
        return src
    if dest.exists():
        return dest
    with open(src, "rb") as f:
        head = f.read(max_bytes)
    cut = max(
        (head.rfind(t.encode()) + len(t.encode()) for t in special_tokens if t.encode() in head),
        default=-1,
    )
    if cut <= 0:
        cut = head.rfind(b"\n") + 1
    if cut <= 0:
        raise ValueError(
            f"{src}: no document or line ends in the first {max_bytes} bytes; raise data.max_text_bytes"
        )
    with atomic_write(dest, "wb") as f:
        f.write(
            head[: cut + (head[cut : cut + 1] == b"\n")]
        )  # keep the newline after the separator
    return dest


def tokenizer_size(tokenizer_dir: str | os.PathLike | None) -> int | None:
    """The number of ids of the tokenizer saved in `tokenizer_dir` (None if there is none)."""
    vocab = None if tokenizer_dir is None else Path(tokenizer_dir) / VOCAB_FILE
    return len(read_vocab_json(vocab)) if vocab is not None and vocab.is_file() else None


def check_vocab_size(tokenizer_dir: str | os.PathLike | None, vocab_size: int) -> None:
    """A model has exactly one embedding row per id of its tokenizer: a mismatch means the
    two belong to different runs (checked before any work is done)."""
    size = tokenizer_size(tokenizer_dir)
    if size is not None and size != vocab_size:
        raise ValueError(
            f"the tokenizer in {tokenizer_dir} has {size:,} ids, but the model's vocab_size is "
            f"{vocab_size:,}: they do not belong together. Use the tokenizer the model was trained "
            f"with; to train a model for this tokenizer, use --model.vocab_size {size} (on "
            "script/train.py's command line it may be left out: it defaults to the tokenizer's size)."
        )


def _require_text(path: str | None, tokens_path: Path, what: str) -> Path:
    if path is None:
        raise FileNotFoundError(
            f"{what} token file {tokens_path} not found, and data.{what}_text names no raw text to build "
            f"it from. Point data.{what}_tokens at an existing token file, or set data.{what}_text "
            "(TinyStories / OpenWebText: `uv run python script/download_data.py`)."
        )
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"raw {what} text {path} not found (needed to build {tokens_path}). Download it with "
            f"`uv run python script/download_data.py`, or fix data.{what}_text."
        )
    return Path(path)


def default_run(
    data_dir: str | os.PathLike = "data", online: bool = True, say=print
) -> tuple[str, dict[str, object]]:
    """What the no-argument run trains on, as overrides of configs/demo.toml and a description.

    Real text when it can be had: a 10 MB slice of TinyStories (more than the demo's 2.5M
    training tokens) when both of its files are in `data_dir`; else its validation file (about
    22 MB, downloaded when missing, `online`, and the Hub answers within seconds) split by
    documents into training and validation text. Otherwise the built-in generated stories, with one line
    through `say` telling why.
    """
    data_dir = Path(data_dir)
    train, valid = data_dir / TINYSTORIES_FILES[0], data_dir / TINYSTORIES_FILES[1]
    if train.is_file() and valid.is_file():
        description, out = f"a 10 MB slice of TinyStories ({train})", data_dir / "tinystories_demo"
    else:
        out = data_dir / "tinystories_valid_split"
        train, valid = out / "train.txt", out / "valid.txt"
        if not (train.is_file() and valid.is_file()):
            from cs336_basics.download import fetch_tinystories_valid, split_documents

            def offline(why: str) -> None:
                say(f"{why} Training on the built-in generated stories instead.")

            source = fetch_tinystories_valid(data_dir, say=offline) if online else None
            if source is None:
                return "the built-in corpus of generated children's stories (no download)", {}
            split_documents(source, train, valid)
        description = (
            f"the TinyStories V2-GPT4 validation text, split by documents into {train} and {valid}"
        )
    return description, {
        "data.demo_corpus": False,
        "data.train_text": str(train),
        "data.val_text": str(valid),
        "data.max_text_bytes": 10_000_000,
        "data.max_val_text_bytes": 1_000_000,
        "data.tokenizer_dir": str(out / "tokenizer"),
        "data.train_tokens": str(out / "train.npy"),
        "data.val_tokens": str(out / "valid.npy"),
        "training.run_name": "demo_tinystories",
    }


def prepare_data(data: DataConfig, vocab_size: int, progress: bool = True) -> None:
    """Make sure `data.train_tokens` and `data.val_tokens` exist, building what is missing:
    the demo corpus (if `data.demo_corpus`), text slices (`max_text_bytes`), the tokenizer
    (trained on the training text, `vocab_size` entries) and the token arrays."""
    from cs336_basics.tokenizer.binarize import encode_file  # heavy imports only when there is work
    from cs336_basics.tokenizer.bpe import train_bpe
    from cs336_basics.tokenizer.tokenizer import Tokenizer

    say = print if progress else (lambda *_: None)
    if data.train_tokens is None or data.val_tokens is None:
        raise ValueError(
            "set data.train_tokens and data.val_tokens: the token files to train and validate "
            "on (built from data.train_text / data.val_text when missing), or run "
            "script/train.py with no data option for the built-in demo"
        )
    splits = {"train": Path(data.train_tokens), "val": Path(data.val_tokens)}
    missing = {what: p for what, p in splits.items() if not p.exists()}
    if not missing:
        return
    for what, p in missing.items():
        if p.suffix != ".npy":
            raise ValueError(
                f"data.{what}_tokens = {p} does not exist, and only .npy token files can be built; "
                "give it a .npy name or point it at an existing file"
            )
    if data.demo_corpus:
        sizes = {
            "train": data.demo_corpus_bytes,
            "val": int(data.demo_corpus_bytes * DEMO_VAL_FRACTION),
        }
        for seed, (what, text) in enumerate((("train", data.train_text), ("val", data.val_text))):
            if not Path(text).exists():
                say(f"writing {sizes[what] / 1e6:.1f} MB of generated children's stories to {text}")
                write_corpus(text, sizes[what], seed=seed)

    if data.tokenizer_dir is None:
        raise ValueError(
            f"{', '.join(str(p) for p in missing.values())} not found, and data.tokenizer_dir is "
            "not set: name the tokenizer folder to build the token files with (it is trained "
            "on data.train_text if missing)"
        )
    need_tokenizer = tokenizer_size(data.tokenizer_dir) is None
    limits = {"train": data.max_text_bytes, "val": data.max_val_text_bytes}
    texts = {}
    for what in [w for w in splits if w in missing or (w == "train" and need_tokenizer)]:
        text = _require_text(getattr(data, f"{what}_text"), splits[what], what)
        if limits[what] is not None:
            dest = splits[what].with_name(splits[what].stem + ".slice.txt")
            text = slice_text(text, dest, limits[what], data.special_tokens)
        texts[what] = text

    if need_tokenizer:
        say(
            f"training a {vocab_size:,}-token BPE tokenizer on {texts['train']} "
            f"({texts['train'].stat().st_size / 1e6:.1f} MB) ..."
        )
        start = time.perf_counter()
        vocab, merges = train_bpe(
            texts["train"], vocab_size, data.special_tokens, progress=progress
        )
        Tokenizer(vocab, merges, data.special_tokens).save_dir(data.tokenizer_dir)
        say(f"  done in {time.perf_counter() - start:.1f}s -> {data.tokenizer_dir}")
        if len(vocab) < vocab_size:  # the text ran out of pairs to merge
            check_vocab_size(data.tokenizer_dir, vocab_size)
    tokenizer = Tokenizer.from_dir(data.tokenizer_dir, data.special_tokens)
    for what, tokens_path in missing.items():
        say(f"tokenizing {texts[what]} -> {tokens_path} ...")
        stats = encode_file(tokenizer, texts[what], tokens_path, progress=progress)
        say(
            f"  {stats.num_tokens:,} tokens ({stats.bytes_per_token:.2f} bytes/token) "
            f"in {stats.seconds:.1f}s"
        )
