import itertools

import pytest

from cs336_basics.optim import get_lr_cosine_schedule, get_lr_wsd_schedule


def _reference_wsd(it, lr_max, lr_min, warmup, decay, total):
    """The schedule as interpolation between its corner points (it, lr)."""
    corners = [(0, 0.0 if warmup else lr_max), (warmup, lr_max), (total - decay, lr_max)]
    corners += [(total, lr_min)]
    if it >= total:
        return lr_min
    for (x0, y0), (x1, y1) in itertools.pairwise(corners):
        if x0 <= it < x1:
            return y0 + (y1 - y0) * (it - x0) / (x1 - x0)
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    "warmup, decay, total", [(10, 20, 100), (0, 20, 100), (10, 0, 100), (10, 90, 100), (0, 0, 5)]
)
def test_wsd_schedule_at_its_phase_boundaries(warmup, decay, total):
    lr_max, lr_min = 1.0, 0.1

    def lr(it):
        return get_lr_wsd_schedule(it, lr_max, lr_min, warmup, decay, total)

    decay_start = total - decay
    assert lr(0) == (lr_max if warmup == 0 else 0.0)
    if warmup > 0:
        assert lr(warmup - 1) == pytest.approx(lr_max * (warmup - 1) / warmup)
        assert lr(warmup / 2) == pytest.approx(lr_max / 2)
    assert lr(warmup) == (lr_min if warmup == total else lr_max)
    if decay_start > warmup:
        assert lr(decay_start - 0.5) == lr_max  # the end of the flat phase
    if decay > 0:
        assert lr(decay_start) == lr_max
        assert lr(decay_start + decay / 2) == pytest.approx((lr_max + lr_min) / 2)
        assert lr(total - 1) == pytest.approx(lr_min + (lr_max - lr_min) / decay)
    assert lr(total) == lr_min and lr(total + 0.5) == lr_min and lr(10 * total + 1) == lr_min
    values = [lr(it) for it in range(warmup, total + 3)]
    assert all(a >= b for a, b in itertools.pairwise(values))


@pytest.mark.parametrize("warmup, decay, total", [(7, 13, 41), (0, 10, 10), (3, 0, 9)])
def test_wsd_schedule_at_fractional_iterations(warmup, decay, total):
    # A time budget gives positions between steps: the schedule is piecewise linear in them.
    for k in range(0, 4 * (total + 2)):
        it = k / 4 + 0.01 * (k % 3)
        expected = _reference_wsd(it, 3e-3, 3e-4, warmup, decay, total)
        assert get_lr_wsd_schedule(it, 3e-3, 3e-4, warmup, decay, total) == pytest.approx(
            expected, rel=1e-12, abs=1e-15
        )


def test_cosine_schedule_at_fractional_iterations():
    lr_max, lr_min, warmup, cycle = 1.0, 0.1, 4, 12
    assert get_lr_cosine_schedule(0.5, lr_max, lr_min, warmup, cycle) == pytest.approx(0.125)
    assert get_lr_cosine_schedule(8.0, lr_max, lr_min, warmup, cycle) == pytest.approx(0.55)
    assert get_lr_cosine_schedule(12.5, lr_max, lr_min, warmup, cycle) == lr_min
    # Between two integer steps the value lies between theirs.
    for it in range(warmup, cycle):
        mid = get_lr_cosine_schedule(it + 0.5, lr_max, lr_min, warmup, cycle)
        assert (
            get_lr_cosine_schedule(it, lr_max, lr_min, warmup, cycle)
            > mid
            > get_lr_cosine_schedule(it + 1, lr_max, lr_min, warmup, cycle)
        )


@pytest.mark.parametrize(
    "args",
    [
        (-1, 1.0, 0.1, 5, 10, 100),  # negative it
        (float("nan"), 1.0, 0.1, 5, 10, 100),
        (0, 1.0, 0.1, -1, 10, 100),  # negative warmup
        (0, 1.0, 0.1, 5, -1, 100),  # negative decay
        (0, 1.0, 0.1, 60, 50, 100),  # warmup and decay overlap
        (0, 0.1, 1.0, 5, 10, 100),  # min above max
        (0, 1.0, -0.1, 5, 10, 100),  # negative min
    ],
)
def test_wsd_schedule_rejects_bad_arguments(args):
    with pytest.raises(ValueError, match="need"):
        get_lr_wsd_schedule(*args)


def test_cosine_schedule_rejects_nan_iteration():
    with pytest.raises(ValueError):
        get_lr_cosine_schedule(float("nan"), 1.0, 0.1, 5, 10)
