"""Encode text files into flat `.npy` arrays of token ids, in parallel worker processes.

A file is cut into ranges that split no pre-token and no special token (`chunk_ranges`), so
encoding the ranges one by one gives exactly `tokenizer.encode(whole_text)`. This process and
helper processes encode ranges as they claim them, while this one appends them in order to a
temp `.npy` next to the output and renames it into place at the end.
"""

import gc
import io
import multiprocessing as mp

# Imported up front: on first use they would add ~6 ms to starting the helpers.
import multiprocessing.queues
import multiprocessing.sharedctypes
import multiprocessing.synchronize
import os
import queue
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Self

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


# Smaller files are encoded in this process alone: handing ranges to helpers costs ~1 ms.
PARALLEL_MIN_BYTES = 1 << 16
# `encode_file` forks helpers only for files of at least this size: forking them costs more
# than they save on smaller ones.
FORK_MIN_BYTES = 1 << 19
# Ranges are at least this long (unless each worker gets just one): each costs a read, a hand-
# over between processes and a batch of new words to merge, which such ranges keep small.
MIN_RANGE_BYTES = 1 << 20
# How many encoded ranges may wait, in memory, for an earlier one to be written.
MAX_WAITING_RANGES = 8


def _encode_range(tokenizer: Tokenizer, path: str, start: int, end: int) -> bytes:
    return tokenizer.encode_to_bytes(read_range(path, start, end))


class FileEncoder:
    """Encodes text files with a tokenizer, in this process and `workers - 1` (default: one per
    core, less one) helper processes that stay up for file after file. Use it as a context
    manager, or call `close`.

    `tokenizer` is a Tokenizer, which the helpers inherit, or a function that builds one
    (picklable where processes are spawned, not forked): then the helpers start first and each
    builds its own while this process builds its (as tokenize_and_bin.py does), so that they
    are ready when the first file comes and share no memory with this process. A helper forked
    from a process that holds a tokenizer shares its pages copy-on-write: the fork takes
    milliseconds, and each page that either process then writes costs a page fault (~2 us on a
    virtual machine; thousands a file): a quarter of the time a 1 MB file takes.
    """

    def __init__(
        self, tokenizer: "Tokenizer | Callable[[], Tokenizer]", workers: int | None = None
    ):
        self._jobs: list[Connection] = []  # one pipe to each helper
        self._helpers: list[mp.Process] = []
        self._job = 0
        helpers = (workers or os.cpu_count() or 1) - 1
        # fork: helpers start in milliseconds with the tokenizer (or what builds it) inherited,
        # where a fresh interpreter takes over a second to import everything. Helpers run only
        # the tokenizer, never torch, so threads the caller may hold cannot deadlock them.
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        if helpers > 0:
            # The job (file) being encoded, in the high 32 bits, and its next range not taken.
            self._next_range = ctx.Value("q", 0)
            self._results = ctx.Queue(MAX_WAITING_RANGES)
        tqdm.get_lock()  # made on first use, ~0.5 ms: not while a file is encoded
        try:
            for _ in range(helpers):
                receive, send = ctx.Pipe(duplex=False)
                helper = ctx.Process(
                    target=_helper,
                    args=(tokenizer, receive, self._next_range, self._results),
                    daemon=True,
                )
                helper.start()
                receive.close()
                self._jobs.append(send)
                self._helpers.append(helper)
            self.tokenizer = tokenizer if isinstance(tokenizer, Tokenizer) else tokenizer()
        except BaseException:
            self.close()
            raise

    @property
    def workers(self) -> int:
        return len(self._helpers) + 1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the helpers. They are not waited for (tearing a process down takes
        milliseconds); multiprocessing reaps them."""
        for send in self._jobs:
            send.close()
        for helper in self._helpers:
            if helper.is_alive():
                helper.terminate()

    def encode_file(
        self,
        input_path: str | os.PathLike,
        output_path: str | os.PathLike,
        progress: bool = True,
        chunk_size: int = 1 << 20,
    ) -> EncodeStats:
        """Write `tokenizer.encode(text of input_path)` to `output_path` as a 1-D `.npy` array.

        The array is uint16 when the vocab has at most 65,536 ids, else uint32; read it back
        with `np.load(output_path, mmap_mode="r")`. All workers (just this process for a file
        under PARALLEL_MIN_BYTES) encode ranges of at most about `chunk_size` bytes; memory
        follows `chunk_size` times the workers and the at most 2 * MAX_WAITING_RANGES finished
        ranges waiting for an earlier one, not the file size. The output appears only when
        complete; on an error or interrupt it is left untouched.
        """
        input_path = Path(input_path)
        if not input_path.is_file():
            raise FileNotFoundError(f"input text file not found: {input_path}")
        size = input_path.stat().st_size
        workers = 1 if size < PARALLEL_MIN_BYTES else self.workers
        dtype = self.tokenizer.id_dtype
        start_time = time.perf_counter()
        # Up to 8 ranges a worker, so that none idles long at the end while another still works,
        # but of at least MIN_RANGE_BYTES.
        ranges_per_worker = min(max(size // (workers * MIN_RANGE_BYTES), 1), 8)
        chunk_size = min(chunk_size, -(-size // (workers * ranges_per_worker)))
        ranges = chunk_ranges(input_path, chunk_size, self.tokenizer.special_tokens)
        path = os.fspath(input_path)
        if workers > 1 and len(ranges) > 1:
            encoded = self._in_parallel(path, ranges)
        else:
            encoded = (_encode_range(self.tokenizer, path, *r) for r in ranges)
        num_tokens = 0
        gc_was_enabled = gc.isenabled()
        with (
            atomic_write(output_path, "wb") as out,
            tqdm(total=size, unit="B", unit_scale=True, desc="encode", disable=not progress) as bar,
        ):
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

    def _in_parallel(self, path: str, ranges: list[tuple[int, int]]) -> Iterator[bytes]:
        """Each range's packed ids, in order: encoded here and by the helpers, each claiming the
        next range not taken."""
        self._job += 1
        job = self._job
        with self._next_range.get_lock():
            self._next_range.value = job << 32
        for send in self._jobs:
            with suppress(BrokenPipeError):  # a helper that died: see the wait below
                send.send((job, path, ranges))
        done: dict[int, bytes] = {}  # encoded ranges that wait for an earlier one
        for i in range(len(ranges)):
            while i not in done:
                if (
                    len(done) < MAX_WAITING_RANGES
                    and (mine := _claim(self._next_range, job, len(ranges))) is not None
                ):
                    done[mine] = _encode_range(self.tokenizer, path, *ranges[mine])
                    continue
                try:
                    from_job, index, message = self._results.get(timeout=1.0)
                except queue.Empty:
                    # While files come, a helper stops only if killed (say, for memory) or
                    # failed with an error that could not be sent.
                    if any(h.exitcode is not None for h in self._helpers):
                        raise RuntimeError(
                            "an encoding helper process died (out of memory?)"
                        ) from None
                    continue
                if index < 0:
                    raise message
                if from_job == job:  # else left over from a file that failed
                    done[index] = message
            yield done.pop(i)


def _claim(next_range, job: int, count: int) -> int | None:
    """The next range of `job` (of `count`) not taken yet, or None when all are or the job is
    over (a helper late for a file must not take a range of the next)."""
    with next_range.get_lock():
        value = next_range.value
        if value >> 32 != job or value & 0xFFFFFFFF >= count:
            return None
        next_range.value = value + 1
    return value & 0xFFFFFFFF


def _helper(tokenizer, jobs: Connection, next_range, results) -> None:
    """Helper process: build the tokenizer if given what builds it; then for each job (file)
    received, encode the ranges it claims and send (job, index, ids) until none are left."""
    gc.disable()  # the encoder makes no reference cycles; collections would only cost time
    # The queue's feeder thread sends each result; let it take the GIL within 0.1 ms, not 5.
    sys.setswitchinterval(1e-4)
    try:
        if not isinstance(tokenizer, Tokenizer):
            tokenizer = tokenizer()
        while True:
            try:
                job, path, ranges = jobs.recv()
            except EOFError:  # closed: no more files
                return
            while (i := _claim(next_range, job, len(ranges))) is not None:
                results.put((job, i, _encode_range(tokenizer, path, *ranges[i])))
    except BaseException as e:  # the parent re-raises it; a silent helper would hang the parent
        results.put((0, -1, e))


def encode_file(
    tokenizer: Tokenizer,
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    num_workers: int | None = None,
    progress: bool = True,
    chunk_size: int = 1 << 20,
) -> EncodeStats:
    """`FileEncoder(tokenizer, num_workers).encode_file(...)` for one file: helpers (none for a
    file under FORK_MIN_BYTES) are forked for this call and stopped after it."""
    path = Path(input_path)
    small = not path.is_file() or path.stat().st_size < FORK_MIN_BYTES
    with FileEncoder(tokenizer, 1 if small else num_workers) as encoder:
        return encoder.encode_file(input_path, output_path, progress, chunk_size)
