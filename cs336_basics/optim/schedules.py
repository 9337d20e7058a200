"""Learning-rate schedules: functions of the step that the trainer sets before each update."""

import math


def get_lr_cosine_schedule(
    it: int,
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
    if it < 0 or warmup_iters < 0 or cosine_cycle_iters < warmup_iters:
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
