"""Learning-rate schedules: functions of the step that the trainer sets before each update.

Both accept a fractional iteration `it` (a position measured in time rather than steps, as
under a time budget) and return a Python float.
"""

import math


def get_lr_cosine_schedule(
    it: float,
    max_learning_rate: float,
    min_learning_rate: float,
    warmup_iters: int,
    cosine_cycle_iters: int,
) -> float:
    """Learning rate at iteration `it`: linear warmup, cosine annealing, then constant.

    it < warmup:          it / warmup * max_learning_rate
    warmup <= it < cycle: min + (1 + cos(pi * (it - warmup) / (cycle - warmup))) / 2 * (max - min)
    it >= cycle:          min_learning_rate (where the cosine ends)
    (warmup = warmup_iters, cycle = cosine_cycle_iters, min/max = the learning rates.)
    With warmup_iters == cosine_cycle_iters the cosine phase is empty: min from there on.
    """
    if not it >= 0 or warmup_iters < 0 or cosine_cycle_iters < warmup_iters:
        raise ValueError(
            "need 0 <= it and 0 <= warmup_iters <= cosine_cycle_iters, got "
            f"it={it}, warmup_iters={warmup_iters}, cosine_cycle_iters={cosine_cycle_iters}"
        )
    if it < warmup_iters:
        return it / warmup_iters * max_learning_rate
    if it >= cosine_cycle_iters:
        return min_learning_rate
    progress = (it - warmup_iters) / (cosine_cycle_iters - warmup_iters)
    return min_learning_rate + 0.5 * (1 + math.cos(math.pi * progress)) * (
        max_learning_rate - min_learning_rate
    )


def get_lr_wsd_schedule(
    it: float,
    max_learning_rate: float,
    min_learning_rate: float,
    warmup_iters: int,
    decay_iters: int,
    total_iters: int,
) -> float:
    """Warmup-stable-decay: linear warmup, a flat phase at the peak, a linear decay to the end.

    it < warmup:                   it / warmup * max_learning_rate
    warmup <= it < total - decay:  max_learning_rate
    total - decay <= it < total:   linear from max (at total - decay) to min (at total)
    it >= total:                   min_learning_rate
    (warmup = warmup_iters, decay = decay_iters, total = total_iters.) Unlike cosine, the peak
    holds until the decay starts, so where the run ends only moves the decay.
    """
    if not 0 <= min_learning_rate <= max_learning_rate:
        raise ValueError(
            "need 0 <= min_learning_rate <= max_learning_rate, got "
            f"min_learning_rate={min_learning_rate}, max_learning_rate={max_learning_rate}"
        )
    if (
        not it >= 0
        or warmup_iters < 0
        or decay_iters < 0
        or warmup_iters + decay_iters > total_iters
    ):
        raise ValueError(
            "need 0 <= it, 0 <= warmup_iters, 0 <= decay_iters and warmup_iters + decay_iters "
            f"<= total_iters, got it={it}, warmup_iters={warmup_iters}, decay_iters={decay_iters}, "
            f"total_iters={total_iters}; shorten the warmup or the decay to fit the run"
        )
    decay_start = total_iters - decay_iters
    if it < warmup_iters:
        return it / warmup_iters * max_learning_rate
    if it < decay_start:
        return max_learning_rate
    if it >= total_iters:
        return min_learning_rate
    progress = (it - decay_start) / decay_iters
    return max_learning_rate + progress * (min_learning_rate - max_learning_rate)
