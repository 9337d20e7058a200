"""Encode a text file into one flat `.npy` array of token ids, in parallel worker processes.

The file is cut into ranges that split no pre-token and no special token (`chunk_ranges`), so
encoding the ranges one by one gives exactly `tokenizer.encode(whole_text)`. This process and
forked helpers encode ranges as they claim them, while this one appends them in order to a temp
`.npy` next to the output and renames it into place at the end.
"""

import gc
import io
import multiprocessing as mp

# Imported up front: on first use they would add ~6 ms to encoding a file (a 1 MB file takes 40).
import multiprocessing.queues
import multiprocessing.sharedctypes
import multiprocessing.synchronize
import os
import queue
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cs336_basics.fileio import atomic_write
from cs336_basics.tokenizer.pretokenize import chunk_ranges, read_range
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


if "fork" in mp.get_all_start_methods():
    import multiprocessing.popen_fork  # up front too, where fork exists


def _npy_header(dtype: np.dtype, length: int) -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header,
        {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (length,)},
    )
    return header.getvalue()


# Smaller files are encoded in this process: starting a helper would cost more than it saves.
PARALLEL_MIN_BYTES = 1 << 19
# Ranges are at least this long (unless each worker gets just one): every range pays to merge
# the words new to it, in one batch, and a batch of many words merges fastest per word.
MIN_RANGE_BYTES = 1 << 20
# How many encoded ranges may wait, in memory, for an earlier one to be written.
MAX_WAITING_RANGES = 8


def _encode_range(tokenizer: Tokenizer, path: str, start: int, end: int) -> bytes:
    return tokenizer.encode_to_bytes(read_range(path, start, end))


def _helper(tokenizer: Tokenizer, path: str, ranges: list[tuple[int, int]], next_range, results):
    """Helper process: encode the ranges it claims from the shared counter; send (index, ids)."""
    gc.disable()  # the encoder makes no reference cycles; collections would only cost time
    # The queue's feeder thread sends each result; let it take the GIL within 0.1 ms, not 5.
    sys.setswitchinterval(1e-4)
    try:
        while (i := _claim(next_range)) < len(ranges):
            results.put((i, _encode_range(tokenizer, path, *ranges[i])))
    except BaseException as e:  # the parent re-raises it; a silent helper would hang the parent
        results.put((-1, e))


def _claim(next_range) -> int:
    with next_range.get_lock():
        i = next_range.value
        next_range.value += 1
    return i


@contextmanager
def _encoding_in_parallel(
    tokenizer: Tokenizer, path: str, ranges: list[tuple[int, int]], helpers: int
) -> Iterator[Iterator[bytes]]:
    """Start `helpers` forked processes that, with this one, encode the ranges, each claiming
    the next range not taken; give an iterator of each range's packed ids in order. The helpers
    are stopped on exit."""
    # fork: helpers start in milliseconds with the tokenizer (and its warm cache) inherited,
    # where a fresh interpreter takes over a second to import and rebuild it. Helpers run only
    # the tokenizer, never torch, so threads the caller may hold cannot deadlock them.
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    next_range = ctx.Value("q", 0)
    results = ctx.Queue(MAX_WAITING_RANGES)
    procs = [
        ctx.Process(
            target=_helper, args=(tokenizer, path, ranges, next_range, results), daemon=True
        )
        for _ in range(helpers)
    ]
    try:
        for p in procs:
            p.start()
        yield _in_order(tokenizer, path, ranges, next_range, results, procs)
    finally:
        # All ranges are written, or this failed: nothing is left for the helpers. They are not
        # waited for (tearing a process down takes milliseconds); multiprocessing reaps them.
        for p in procs:
            if p.is_alive():
                p.terminate()


def _in_order(tokenizer, path, ranges, next_range, results, procs) -> Iterator[bytes]:
    """This process's side: encode the ranges it claims, take the helpers', yield all in order."""
    done: dict[int, bytes] = {}  # encoded ranges that wait for an earlier one
    for i in range(len(ranges)):
        while i not in done:
            if len(done) < MAX_WAITING_RANGES and (mine := _claim(next_range)) < len(ranges):
                done[mine] = _encode_range(tokenizer, path, *ranges[mine])
                continue
            try:
                index, message = results.get(timeout=1.0)
            except queue.Empty:
                if any(p.exitcode not in (None, 0) for p in procs):
                    raise RuntimeError("an encoding helper process died (out of memory?)") from None
                continue
            if index < 0:
                raise message
            done[index] = message
        yield done.pop(i)


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
    this one for a file under PARALLEL_MIN_BYTES), this one among them, encode ranges of at
    most about `chunk_size` bytes; memory follows `chunk_size` times the workers and the at
    most 2 * MAX_WAITING_RANGES finished ranges waiting for an earlier one, not the file size.
    The output appears only when complete; on an error or interrupt it is left untouched.
    """
    input_path = Path(input_path)
    if not input_path.is_file():
        raise FileNotFoundError(f"input text file not found: {input_path}")
    size = input_path.stat().st_size
    workers = 1 if size < PARALLEL_MIN_BYTES else (num_workers or os.cpu_count() or 1)
    dtype = tokenizer.id_dtype
    start_time = time.perf_counter()
    # Up to 8 ranges a worker, so that none idles long at the end while another still works,
    # but of at least MIN_RANGE_BYTES: each range pays a start-up cost (its new words).
    ranges_per_worker = min(max(size // (workers * MIN_RANGE_BYTES), 1), 8)
    chunk_size = min(chunk_size, -(-size // (workers * ranges_per_worker)))
    ranges = chunk_ranges(input_path, chunk_size, tokenizer.special_tokens)
    num_tokens = 0
    gc_was_enabled = gc.isenabled()
    with ExitStack() as stack:
        # Helpers first, so that they start work as soon as possible.
        helpers = min(workers, len(ranges)) - 1
        if helpers > 0:
            path = os.fspath(input_path)
            encoded = stack.enter_context(_encoding_in_parallel(tokenizer, path, ranges, helpers))
        else:
            encoded = (_encode_range(tokenizer, os.fspath(input_path), *r) for r in ranges)
        out = stack.enter_context(atomic_write(output_path, "wb"))
        bar = stack.enter_context(
            tqdm(total=size, unit="B", unit_scale=True, desc="encode", disable=not progress)
        )
        # The real length is known only at the end; the header is rewritten then.
        placeholder = _npy_header(dtype, np.iinfo(np.int64).max)
        out.write(placeholder)
        # The encoder makes no reference cycles; collections would only rescan its tables.
        gc.disable()
        try:
            for (start, end), ids in zip(ranges, encoded):
                out.write(ids)
                num_tokens += len(ids) // dtype.itemsize
                bar.update(end - start)
        finally:
            if gc_was_enabled:
                gc.enable()
        header = _npy_header(dtype, num_tokens)
        assert len(header) == len(placeholder), "npy header length depends on the array length"
        out.seek(0)
        out.write(header)
    return EncodeStats(size, num_tokens, time.perf_counter() - start_time, dtype.name)
