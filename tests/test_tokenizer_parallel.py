"""The parallel range engine: results in order from forked workers, gathering, one error
protocol, workers stopped on every way out."""

import multiprocessing
import os
import threading
import time

import pytest

from cs336_basics.tokenizer.parallel import map_ranges

RANGES = [(i, i + 1) for i in range(40)]


def test_results_come_in_order_from_the_workers():
    handled = []  # this process's ranges, whichever process that is

    def work(start: int, end: int) -> tuple[int, int]:
        time.sleep(0.01)  # so that every worker gets some
        handled.append(start)
        return start, os.getpid()

    with map_ranges(work, RANGES, 3, gather=lambda: handled) as results:
        results = list(results)
    ranges_done, pids = zip(*results[: len(RANGES)])
    assert list(ranges_done) == [start for start, _ in RANGES]
    assert os.getpid() not in pids and len(set(pids)) >= 2  # a third may start late if busy
    gathered = results[len(RANGES) :]
    assert len(gathered) == 3 and sorted(sum(gathered, [])) == list(ranges_done)
    assert handled == [] and multiprocessing.active_children() == []


def test_one_worker_works_here():
    with map_ranges(lambda s, e: os.getpid(), RANGES, 1, gather=lambda: "here") as results:
        assert list(results) == [os.getpid()] * len(RANGES) + ["here"]


def fail():
    raise ValueError("bad range")


class Unpicklable(Exception):
    def __init__(self):
        super().__init__("cannot travel")
        self.lock = threading.Lock()


def fail_unpicklable():
    raise Unpicklable()


@pytest.mark.parametrize(
    "in_worker, error, message",
    [
        (fail, ValueError, "bad range"),
        (fail_unpicklable, RuntimeError, "Unpicklable: cannot travel"),
        (lambda: os._exit(3), RuntimeError, r"worker process died \(exit code 3"),
    ],
)
def test_a_worker_error_is_raised_here_and_workers_stop(in_worker, error, message):
    with pytest.raises(error, match=message):
        with map_ranges(lambda start, end: in_worker(), RANGES, 2) as results:
            list(results)
    assert multiprocessing.active_children() == []


def test_leaving_early_stops_the_workers():
    with map_ranges(lambda start, end: time.sleep(10), RANGES, 3):
        assert len(multiprocessing.active_children()) == 3
    assert multiprocessing.active_children() == []
