"""Encode a text file into a flat `.npy` array of token ids, in parallel.

The file is cut into ranges that split no pre-token and no special token (`chunk_ranges`), so
encoding the ranges one by one gives exactly `tokenizer.encode(whole_text)`. Forked workers
encode the ranges (`map_ranges`) while this process appends them, in order, to a temp `.npy`
next to the output, renamed into place when complete.

The text is read as UTF-8 with bytes that are not valid UTF-8 replaced by U+FFFD, as
`open(path, errors="replace").read()` gives it.
"""

import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from cs336_basics.fileio import atomic_write
from cs336_basics.tokenizer.parallel import map_ranges
from cs336_basics.tokenizer.pretokenize import chunk_ranges, read_range
from cs336_basics.tokenizer.tokenizer import Tokenizer

# Ranges are at least this long (unless each worker gets just one): each costs a read and a
# hand-over between processes.
MIN_RANGE_BYTES = 1 << 20
# Bytes from each of three places in the file (start, middle, end) on which the tiktoken
# backend must give our ids before it encodes anything.
TIKTOKEN_CHECK_BYTES = 1 << 18


@dataclass
class EncodeStats:
    input_bytes: int
    num_tokens: int
    seconds: float
    cpu_seconds: float  # of this process and its workers together
    dtype: str  # "uint16" or "uint32"

    @property
    def bytes_per_token(self) -> float:
        return self.input_bytes / max(self.num_tokens, 1)

    @property
    def mb_per_second(self) -> float:
        return self.input_bytes / 1e6 / max(self.seconds, 1e-9)


def encode_file(
    tokenizer: Tokenizer,
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    num_workers: int | None = None,
    progress: bool = False,
    chunk_size: int = 1 << 20,
    backend: Literal["ours", "tiktoken"] = "ours",
) -> EncodeStats:
    """Write `tokenizer.encode(text of input_path)` to `output_path` as a 1-D `.npy` array.

    The array is uint16 when the vocab has at most 65,536 ids, else uint32; read it back with
    `np.load(output_path, mmap_mode="r")`. `num_workers` processes (default: one per core) encode
    ranges of at most about `chunk_size` bytes; memory follows the ranges in flight, not the
    file size. The output appears only when complete; on an error or interrupt it is left as
    it was.

    backend="tiktoken" encodes with `tokenizer.to_tiktoken()` (faster), after checking that it
    gives our ids on a sample of the file; if not, it raises ValueError before writing anything.
    """
    input_path = Path(input_path)
    if not input_path.is_file():
        raise FileNotFoundError(f"input text file not found: {input_path}")
    size = input_path.stat().st_size
    if size == 0:
        raise ValueError(f"{input_path} is empty: there is no text to encode")
    workers = num_workers or os.cpu_count() or 1
    start_time, start_cpu = time.perf_counter(), _cpu_seconds()
    # Up to 8 ranges a worker, so that none idles long at the end while another still works.
    ranges_per_worker = min(max(size // (workers * MIN_RANGE_BYTES), 1), 8)
    chunk_size = min(chunk_size, -(-size // (workers * ranges_per_worker)))
    ranges = chunk_ranges(input_path, chunk_size, tokenizer.special_tokens)
    encode = tokenizer.encode_to_bytes
    if backend == "tiktoken":
        encode = _tiktoken_encoder(tokenizer, input_path, size)
    elif backend != "ours":
        raise ValueError(f"backend must be 'ours' or 'tiktoken', not {backend!r}")

    def encode_range(start: int, end: int) -> bytes:
        return encode(read_range(input_path, start, end, errors="replace"))

    dtype = tokenizer.id_dtype
    num_tokens = 0
    with (
        atomic_write(output_path, "wb") as out,
        map_ranges(encode_range, ranges, workers) as encoded,
        tqdm(total=size, unit="B", unit_scale=True, desc="encode", disable=not progress) as bar,
    ):
        # The real length is known only at the end; the header is rewritten then.
        placeholder = _npy_header(dtype, np.iinfo(np.int64).max)
        out.write(placeholder)
        for (start, end), ids in zip(ranges, encoded):
            out.write(ids)
            num_tokens += len(ids) // dtype.itemsize
            bar.update(end - start)
        header = _npy_header(dtype, num_tokens)
        assert len(header) == len(placeholder), "npy header length depends on the array length"
        out.seek(0)
        out.write(header)
    seconds, cpu_seconds = time.perf_counter() - start_time, _cpu_seconds() - start_cpu
    return EncodeStats(size, num_tokens, seconds, cpu_seconds, dtype.name)


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have been waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _npy_header(dtype: np.dtype, length: int) -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header,
        {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (length,)},
    )
    return header.getvalue()


def _tiktoken_encoder(tokenizer: Tokenizer, path: Path, size: int):
    """tiktoken's encode, packed as ours, once it has given our ids on three samples of the file
    (its start, middle and end): else ValueError."""
    encoding = tokenizer.to_tiktoken()

    def encode(text: str) -> bytes:
        ids = encoding.encode_to_numpy(text, allowed_special="all")
        return ids.astype(tokenizer.id_dtype).tobytes()

    middle = max(size // 2 - TIKTOKEN_CHECK_BYTES // 2, 0)
    for start in sorted({0, middle, max(size - TIKTOKEN_CHECK_BYTES, 0)}):
        sample = read_range(path, start, min(start + TIKTOKEN_CHECK_BYTES, size), errors="replace")
        ours, theirs = tokenizer.encode(sample), encoding.encode(sample, allowed_special="all")
        if ours != theirs:
            same = (a == b for a, b in zip(ours, theirs))
            at = next((k for k, equal in enumerate(same) if not equal), min(len(ours), len(theirs)))
            raise ValueError(
                f"tiktoken does not give this tokenizer's ids on {path} (bytes {start}.., token "
                f"{at}: ours {ours[at : at + 3]}, tiktoken's {theirs[at : at + 3]}): its vocab "
                "ids do not follow its merge order. Encode without the tiktoken backend."
            )
    return encode
