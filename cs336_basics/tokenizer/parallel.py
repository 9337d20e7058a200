"""Run a function over the byte ranges of a file in forked worker processes.

BPE training counts pre-tokens with it and `encode_file` encodes with it. Each worker takes the
next range not taken yet, so a slow one never holds the others up, and the results come back in
range order.

One start method: fork. Workers start in milliseconds and inherit what the caller has loaded
(a tokenizer, its cache), with nothing pickled and the caller's main module not imported again.
They run only this package's tokenizer code, never torch, so threads the caller may hold cannot
deadlock them. Where fork does not exist (Windows), this process does all the work.

One error protocol: an exception in a worker is sent here and raised in the caller, and a
worker that dies (killed, say, for memory) raises RuntimeError here. Workers die at once and
silently on SIGINT and SIGTERM (Ctrl-C reaches the whole process group), and the signal that
stopped one is raised in the caller too, so the caller alone reports an interrupt, as its own
handler for that signal says. Leaving the `with` block, by an error or not, stops the workers.
"""

import multiprocessing as mp
import pickle
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection, wait
from typing import Any

_GATHERED, _FAILED = -1, -2  # what a worker's message is, when it is not a range's result
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextmanager
def map_ranges(
    work: Callable[[int, int], Any],
    ranges: list[tuple[int, int]],
    workers: int,
    gather: Callable[[], Any] | None = None,
) -> Iterator[Iterator[Any]]:
    """`with map_ranges(work, ranges, workers) as results:` iterate `work(start, end)` of each
    range, in order, computed by `workers` forked processes (forked on entering, before the
    caller starts threads such as a progress bar's) while this one only receives them, so that
    a worker never waits to hand over a result. One worker, or one range, works here.

    With `gather`, each process calls it once after its last range and `results` goes on, after
    the ranges' results, with what each process gathered: for work that accumulates per process.
    """
    workers = min(workers, len(ranges))
    if workers < 2 or "fork" not in mp.get_all_start_methods():
        yield _here(work, ranges, gather)
        return
    ctx = mp.get_context("fork")
    next_range = ctx.Value("q", 0)  # the next range not taken yet
    pipes: dict[Connection, mp.Process] = {}
    try:
        with _stop_signals_held():
            for _ in range(workers):
                receive, send = ctx.Pipe(duplex=False)
                worker = ctx.Process(
                    target=_worker, args=(work, ranges, next_range, gather, send), daemon=True
                )
                worker.start()
                send.close()  # so that the pipe ends when the worker does
                pipes[receive] = worker
        yield _from_workers(len(ranges), gather is not None, pipes)
    finally:
        for worker in pipes.values():
            if worker.is_alive():
                worker.terminate()
            worker.join()


@contextmanager
def _stop_signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while workers are forked: a worker must never run the
    caller's handlers, and the caller must not stop before it knows every worker it forked (to
    stop them). A signal that came meanwhile takes effect at the end."""
    held: list[int] = []
    handlers = {}
    if threading.current_thread() is threading.main_thread():  # where Python handlers run
        handlers = {
            s: signal.signal(s, lambda signum, _: held.append(signum)) for s in _STOP_SIGNALS
        }
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)  # inherited by the workers
    try:
        yield
    finally:
        for s, handler in handlers.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        for signum in held:
            signal.raise_signal(signum)


def _here(work, ranges, gather) -> Iterator[Any]:
    for start, end in ranges:
        yield work(start, end)
    if gather is not None:
        yield gather()


def _claim(next_range, count: int) -> int | None:
    """The index of the next range not taken yet (now taken), or None when all are."""
    with next_range.get_lock():
        i = next_range.value
        if i >= count:
            return None
        next_range.value = i + 1
    return i


def _worker(work, ranges, next_range, gather, send: Connection) -> None:
    # Die at once on Ctrl-C or SIGTERM, silently: the caller gets the signal too and reports it.
    for s in _STOP_SIGNALS:
        signal.signal(s, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    try:
        while (i := _claim(next_range, len(ranges))) is not None:
            send.send((i, work(*ranges[i])))
        send.send((_GATHERED, gather() if gather is not None else None))
    except Exception as e:
        try:
            pickle.dumps(e)
        except Exception:
            e = RuntimeError(f"{type(e).__name__}: {e}")
        send.send((_FAILED, e))


def _from_workers(count: int, gathering: bool, pipes) -> Iterator[Any]:
    done: dict[int, Any] = {}  # received ranges that wait for an earlier one
    gathered: list[Any] = []
    running = dict(pipes)  # workers yet to send what they gathered

    def receive() -> None:
        for pipe in wait(list(running)):
            try:
                index, message = pipe.recv()
            except EOFError:
                worker = running[pipe]
                worker.join()
                if -worker.exitcode in _STOP_SIGNALS:  # sent to the group: this process's too
                    signal.raise_signal(-worker.exitcode)
                raise RuntimeError(
                    f"a worker process died (exit code {worker.exitcode}; out of memory?)"
                ) from None
            if index == _FAILED:
                raise message
            if index == _GATHERED:
                gathered.append(message)
                del running[pipe]
            else:
                done[index] = message

    for i in range(count):
        while i not in done:
            receive()
        yield done.pop(i)
    if gathering:
        while running:
            receive()
        yield from gathered
