"""Encode a text file into one flat `.npy` array of token ids, in parallel worker processes.

The file is cut into ranges that split no pre-token and no special token (`chunk_ranges`), so
encoding the ranges one by one gives exactly `tokenizer.encode(whole_text)`. Workers encode
ranges in order while the parent appends their arrays to a temp `.npy` next to the output and
renames it into place at the end.
"""

import io
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cs336_basics.fileio import atomic_write
from cs336_basics.tokenizer.pretokenize import chunk_ranges
from cs336_basics.tokenizer.tokenizer import Tokenizer


@dataclass
class EncodeStats:
    input_bytes: int
    num_tokens: int
    seconds: float
    dtype: str  # "uint16" or "uint32"

    @property
    def bytes_per_token(self) -> float:
        return self.input_bytes / max(self.num_tokens, 1)

    @property
    def mb_per_second(self) -> float:
        return self.input_bytes / 1e6 / max(self.seconds, 1e-9)


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab of at most 65,536 ids), else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def _npy_header(dtype: np.dtype, length: int) -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header,
        {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (length,)},
    )
    return header.getvalue()


# Smaller files are encoded in this process: starting workers would cost more than it saves.
PARALLEL_MIN_BYTES = 2 << 20

_tokenizer: Tokenizer | None = None  # the worker process's own tokenizer


def _init_worker(tokenizer: Tokenizer) -> None:
    global _tokenizer
    _tokenizer = tokenizer


def _encode_range(
    tokenizer: Tokenizer, path: str, start: int, end: int, dtype: np.dtype
) -> np.ndarray:
    with open(path, "rb") as f:
        f.seek(start)
        # surrogateescape keeps bytes that are not valid UTF-8 as themselves, as training does
        text = f.read(end - start).decode("utf-8", "surrogateescape")
    return np.array(tokenizer.encode(text), dtype=dtype)


def _encode_range_in_worker(task: tuple) -> np.ndarray:
    return _encode_range(_tokenizer, *task)


def encode_file(
    tokenizer: Tokenizer,
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    num_workers: int | None = None,
    progress: bool = True,
    chunk_size: int = 1 << 20,
) -> EncodeStats:
    """Write `tokenizer.encode(text of input_path)` to `output_path` as a 1-D `.npy` array.

    The array is uint16 when the vocab has at most 65,536 ids, else uint32; read it back with
    `np.load(output_path, mmap_mode="r")`. `num_workers` processes (default: all cores; just
    this one for a file under PARALLEL_MIN_BYTES) encode ranges of at most about `chunk_size`
    bytes; memory follows `num_workers * chunk_size`, not the file size. The output appears
    only when complete; on an error or interrupt it is left untouched.
    """
    input_path = Path(input_path)
    if not input_path.is_file():
        raise FileNotFoundError(f"input text file not found: {input_path}")
    size = input_path.stat().st_size
    workers = 1 if size < PARALLEL_MIN_BYTES else (num_workers or os.cpu_count() or 1)
    dtype = token_dtype(max(tokenizer.vocab) + 1)
    start_time = time.perf_counter()
    # At least 4 ranges a worker, so that none idles at the end while another still works.
    chunk_size = min(chunk_size, max(size // (4 * workers), 1 << 18))
    ranges = chunk_ranges(input_path, chunk_size, tokenizer.special_tokens)
    tasks = [(os.fspath(input_path), start, end, dtype) for start, end in ranges]
    num_tokens = 0
    with (
        atomic_write(output_path, "wb") as out,
        tqdm(total=size, unit="B", unit_scale=True, desc="encode", disable=not progress) as bar,
        ExitStack() as stack,
    ):
        # The real length is known only at the end; the header is rewritten then.
        placeholder = _npy_header(dtype, np.iinfo(np.int64).max)
        out.write(placeholder)
        if min(workers, len(tasks)) == 1:
            arrays = (_encode_range(tokenizer, *task) for task in tasks)
        else:
            # fork: workers start in ~0.1 s with the tokenizer (and its warm cache) inherited,
            # where a fresh interpreter takes over a second to import and rebuild it. Workers run
            # only the tokenizer, never torch, so threads the caller may hold cannot deadlock them.
            # A worker that dies (out of memory) raises BrokenProcessPool here rather than hanging.
            start_method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            pool = ProcessPoolExecutor(
                min(workers, len(tasks)),
                mp_context=mp.get_context(start_method),
                initializer=_init_worker,
                initargs=(tokenizer,),
            )
            # On an error, the ranges not started yet are skipped.
            stack.callback(pool.shutdown, cancel_futures=True)
            arrays = pool.map(_encode_range_in_worker, tasks)
        for (start, end), ids in zip(ranges, arrays):
            out.write(ids.tobytes())
            num_tokens += len(ids)
            bar.update(end - start)
        header = _npy_header(dtype, num_tokens)
        assert len(header) == len(placeholder), "npy header length depends on the array length"
        out.seek(0)
        out.write(header)
    return EncodeStats(size, num_tokens, time.perf_counter() - start_time, dtype.name)
