"""Token arrays on disk and the batches drawn from them.

Token files are read through memory maps, so a corpus larger than RAM costs only the pages a
batch touches. `get_batch` samples training windows at random; `validation_batches` gives
the same evaluation windows every time it is called.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from jaxtyping import Int
from torch import Tensor

Generator = np.random.Generator | torch.Generator | None


def _check_window_args(dataset: npt.ArrayLike, batch_size: int, context_length: int) -> None:
    if np.ndim(dataset) != 1:
        raise ValueError(f"dataset must be a 1-D array of token ids, got shape {np.shape(dataset)}")
    if batch_size < 1 or context_length < 1:
        raise ValueError(
            f"batch_size and context_length must be >= 1, got {batch_size} and {context_length}"
        )
    if len(dataset) < context_length + 1:
        name = getattr(dataset, "filename", None) or "dataset"
        raise ValueError(
            f"{name} has {len(dataset)} tokens; a window of context_length={context_length} needs "
            f"at least {context_length + 1} (inputs plus the next-token target). Use more data "
            "or a shorter context."
        )


def windows(
    dataset: npt.ArrayLike,
    starts: npt.NDArray[np.int64],
    context_length: int,
    device: str | torch.device,
) -> tuple[Int[Tensor, "batch context"], Int[Tensor, "batch context"]]:
    """x = dataset[s : s + context_length], y = the same shifted by one, for each start s."""
    # One fancy-indexed read of (batch, context + 1) tokens: a memmap touches only those pages.
    rows = np.asarray(dataset[starts[:, None] + np.arange(context_length + 1)], dtype=np.int64)
    window = torch.from_numpy(rows)
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        window = window.pin_memory()  # lets the copy below overlap with the GPU's work
    window = window.to(device, non_blocking=True)
    return window[:, :-1].contiguous(), window[:, 1:].contiguous()


def sample_starts(
    dataset: npt.ArrayLike, batch_size: int, context_length: int, generator: Generator = None
) -> npt.NDArray[np.int64]:
    """`batch_size` window starts drawn uniformly from 0 .. len(dataset) - context_length - 1.

    `generator` (numpy or torch) makes the draw reproducible; None uses torch's global RNG.
    """
    _check_window_args(dataset, batch_size, context_length)
    num_starts = len(dataset) - context_length
    if isinstance(generator, np.random.Generator):
        return generator.integers(0, num_starts, size=batch_size, dtype=np.int64)
    return torch.randint(num_starts, (batch_size,), generator=generator).numpy()


def get_batch(
    dataset: npt.ArrayLike,
    batch_size: int,
    context_length: int,
    device: str | torch.device,
    generator: Generator = None,
) -> tuple[Int[Tensor, "batch_size context_length"], Int[Tensor, "batch_size context_length"]]:
    """Sample `batch_size` windows of `context_length` tokens and their next-token targets.

    Starts are uniform over every valid offset 0 .. len(dataset) - context_length - 1. Returns
    int64 tensors (x, y) on `device`; y is x shifted by one token (y[:, j] follows x[:, j]).
    `dataset` is any 1-D integer array, e.g. an `np.memmap` (only the sampled tokens are read).
    `generator` (numpy or torch) makes the draw reproducible; None uses torch's global RNG
    (seeded by `torch.manual_seed`). An unusable `device` raises torch's own error.
    """
    starts = sample_starts(dataset, batch_size, context_length, generator)
    return windows(dataset, starts, context_length, device)


def validation_batches(
    dataset: npt.ArrayLike,
    batch_size: int,
    context_length: int,
    num_batches: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> Iterator[tuple[Int[Tensor, "batch context_length"], Int[Tensor, "batch context_length"]]]:
    """A fixed evaluation sample: the same (x, y) batches on every call with the same arguments.

    The data is cut into non-overlapping windows (x at offsets 0, c, 2c, ... with c =
    context_length), so no token is scored twice. `num_batches` batches of such windows are
    drawn without replacement, chosen by `seed`, and yielded in file order; with
    `num_batches=None`, or more batches than the data holds, every window is used once (the
    last batch may be smaller).
    """
    _check_window_args(dataset, batch_size, context_length)
    if num_batches is not None and num_batches < 1:
        raise ValueError(f"num_batches must be >= 1 or None, got {num_batches}")
    num_windows = (len(dataset) - 1) // context_length
    starts = np.arange(num_windows, dtype=np.int64) * context_length
    if num_batches is not None and num_batches * batch_size < num_windows:
        chosen = np.random.default_rng(seed).choice(
            num_windows, num_batches * batch_size, replace=False
        )
        starts = starts[np.sort(chosen)]
    for i in range(0, len(starts), batch_size):
        yield windows(dataset, starts[i : i + batch_size], context_length, device)


def load_tokens(path: str | os.PathLike, dtype: npt.DTypeLike | None = None) -> np.ndarray:
    """Memory-map a 1-D token file read-only.

    `.npy` files carry their dtype (given a `dtype`, it must match); any other extension is
    read as raw headerless ids of `dtype` (default uint16, as written by `ndarray.tofile`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"token file {path} does not exist; tokenize the corpus first")
    if _looks_like_text(path):
        raise ValueError(
            f"{path} holds text, not token ids. Tokenize it first (uv run python "
            f"script/tokenize_and_bin.py --input {path} ...), or name it as data.train_text / "
            "data.val_text so that the run tokenizes it."
        )
    if path.suffix == ".npy":
        try:
            tokens = np.load(path, mmap_mode="r")
        except ValueError as e:
            raise ValueError(f"{path} is not a readable .npy array: {e}") from e
        if dtype is not None and tokens.dtype != np.dtype(dtype):
            raise ValueError(f"{path} holds {tokens.dtype} tokens, expected {np.dtype(dtype)}")
        if tokens.ndim != 1:
            raise ValueError(f"{path} holds an array of shape {tokens.shape}; token files are 1-D")
    else:
        dtype = np.dtype(np.uint16 if dtype is None else dtype)
        size = path.stat().st_size
        if size == 0 or size % dtype.itemsize:
            raise ValueError(
                f"{path} is {size} bytes, not a whole positive number of {dtype} tokens "
                f"({dtype.itemsize} bytes each); wrong dtype or a truncated file?"
            )
        tokens = np.memmap(path, dtype=dtype, mode="r")
    if not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"{path} holds {tokens.dtype} values; token ids must be integers")
    if len(tokens) == 0:
        raise ValueError(f"{path} holds no tokens; was it made from an empty text?")
    return tokens


def _looks_like_text(path: Path, sample_bytes: int = 4096) -> bool:
    """True for a file that starts with printable UTF-8 (a .npy starts with b"\x93NUMPY"; raw
    uint16 ids almost always hold NUL or other control bytes within their first few KB)."""
    with open(path, "rb") as f:
        head = f.read(sample_bytes)
    try:
        text = head.decode("utf-8", errors="strict")
    except UnicodeDecodeError as e:  # a multi-byte character cut at the end of the sample
        text = head[: e.start].decode("utf-8") if e.start > len(head) - 4 else ""
    return len(text) > 0 and all(c.isprintable() or c in "\n\r\t" for c in text)


def check_token_range(tokens: npt.ArrayLike, vocab_size: int, chunk_size: int = 1 << 24) -> None:
    """Raise ValueError unless every id in `tokens` lies in [0, vocab_size).

    Scans `chunk_size` ids at a time, so a memory-mapped corpus is checked in bounded memory.
    """
    lo, hi = 0, -1
    for i in range(0, len(tokens), chunk_size):
        chunk = np.asarray(tokens[i : i + chunk_size])
        lo, hi = min(lo, int(chunk.min())), max(hi, int(chunk.max()))
    if lo < 0 or hi >= vocab_size:
        name = getattr(tokens, "filename", None) or "the token array"
        bad = hi if hi >= vocab_size else lo
        raise ValueError(
            f"{name} contains token id {bad}, outside the model's vocabulary of {vocab_size} ids "
            "(0 .. vocab_size-1). Was it tokenized with a different tokenizer, or does the "
            "model's vocab_size need raising?"
        )
